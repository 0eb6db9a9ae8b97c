//! The Kubernetes API stand-in against the real `kubectl` (/usr/bin/kubectl) and plain HTTP,
//! each test checking a behaviour the Kubernetes documentation describes (cited per test).

use std::process::Stdio;
use std::time::Duration;

use magnum_test_support::kube_api::{
    KubeApiConfig, KubeApiServer, Kubeconfig, Outage, ResourceRef,
};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const KUBECTL_TIMEOUT: Duration = Duration::from_secs(30);

fn clusters() -> ResourceRef {
    ResourceRef::new("cluster.x-k8s.io", "v1beta2", "clusters")
}

async fn start() -> KubeApiServer {
    let mut config = KubeApiConfig::new()
        .capi_crds(&[
            "cluster.x-k8s.io_clusters.yaml",
            "cluster.x-k8s.io_machinedeployments.yaml",
        ])
        .expect("the CAPI CRDs load");
    config.bookmark_interval = Duration::from_millis(200);
    // kubectl (client-go) sends no bearer token over plain http; raw-HTTP tests below
    // check that a wrong token is refused.
    config.anonymous_auth = true;
    KubeApiServer::start(config)
        .await
        .expect("the stand-in starts")
}

struct Kubectl {
    kubeconfig: Kubeconfig,
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Kubectl {
    fn new(server: &KubeApiServer) -> Self {
        Self {
            kubeconfig: server.write_kubeconfig().expect("kubeconfig"),
        }
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new("kubectl");
        command
            .arg("--kubeconfig")
            .arg(self.kubeconfig.path())
            .arg("--cache-dir")
            .arg(self.kubeconfig.cache_dir())
            .args(args)
            .env("HOME", self.kubeconfig.cache_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    async fn run_with_input(&self, args: &[&str], input: &str) -> Run {
        let mut child = self.command(args).spawn().expect("kubectl runs");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(input.as_bytes())
            .await
            .expect("write stdin");
        drop(stdin);
        let output = tokio::time::timeout(KUBECTL_TIMEOUT, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("kubectl {args:?} finished in time"))
            .expect("kubectl output");
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    async fn run(&self, args: &[&str]) -> Run {
        self.run_with_input(args, "").await
    }

    async fn ok(&self, args: &[&str]) -> String {
        self.ok_with_input(args, "").await
    }

    async fn ok_with_input(&self, args: &[&str], input: &str) -> String {
        let run = self.run_with_input(args, input).await;
        assert_eq!(run.code, 0, "kubectl {args:?} failed: {}", run.stderr);
        run.stdout
    }
}

/// One raw HTTP/1.1 request, `Connection: close`; returns status, headers and body.
async fn http(
    server: &KubeApiServer,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
    token: Option<&str>,
) -> (u16, String, String) {
    let mut stream = TcpStream::connect(server.address()).await.expect("connect");
    let authorization = token
        .map(|token| format!("Authorization: Bearer {token}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\n{authorization}Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        server.address(),
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .expect("an answer in time")
        .expect("read");
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    let code = head
        .split_whitespace()
        .nth(1)
        .expect("a status code")
        .parse()
        .expect("numeric");
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (code, head.to_owned(), body)
}

fn dechunk(body: &str) -> String {
    let mut rest = body;
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
    out
}

async fn api(
    server: &KubeApiServer,
    method: &str,
    path: &str,
    content_type: &str,
    body: &Value,
) -> (u16, Value) {
    let text = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let (code, _, body) = http(
        server,
        method,
        path,
        content_type,
        &text,
        Some(server.token()),
    )
    .await;
    (
        code,
        serde_json::from_str(&body).unwrap_or_else(|_| panic!("JSON body: {body}")),
    )
}

fn cluster_yaml(name: &str, version: &str, deployments: &[&str]) -> String {
    let mut yaml = format!(
        "apiVersion: cluster.x-k8s.io/v1beta2\n\
         kind: Cluster\n\
         metadata:\n  name: {name}\n  namespace: default\n  labels:\n    a: b\n\
         spec:\n  topology:\n    classRef:\n      name: magnum\n    version: {version}\n    workers:\n      machineDeployments:\n"
    );
    for deployment in deployments {
        yaml.push_str(&format!(
            "      - class: default-worker\n        name: {deployment}\n        replicas: 1\n"
        ));
    }
    yaml
}

fn managers(object: &Value) -> Vec<(String, String, Value)> {
    object["metadata"]["managedFields"]
        .as_array()
        .expect("managedFields")
        .iter()
        .map(|entry| {
            (
                entry["manager"].as_str().unwrap().to_owned(),
                entry["operation"].as_str().unwrap().to_owned(),
                entry["fieldsV1"].clone(),
            )
        })
        .collect()
}

fn deployment_names(cluster: &Value) -> Vec<String> {
    cluster["spec"]["topology"]["workers"]["machineDeployments"]
        .as_array()
        .expect("machineDeployments")
        .iter()
        .map(|deployment| deployment["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Server-side apply (kubernetes.io/docs/reference/using-api/server-side-apply): "fields
/// that were previously applied by a manager and are absent from its new configuration are
/// removed"; `x-kubernetes-list-type: map` lists merge by key; a different value for a
/// field another manager owns is a conflict unless forced, and forcing moves ownership.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_with_kubectl_prunes_conflicts_and_forces() {
    let server = start().await;
    let kubectl = Kubectl::new(&server);
    let applied = kubectl
        .ok_with_input(
            &["apply", "--server-side", "--field-manager=a", "-f", "-"],
            &cluster_yaml("one", "v1.30.0", &["md-0", "md-1"]),
        )
        .await;
    assert_eq!(
        applied.trim(),
        "cluster.cluster.x-k8s.io/one serverside-applied"
    );
    let apply_request = server
        .requests()
        .into_iter()
        .find(|request| request.method == "PATCH")
        .expect("kubectl sent a PATCH");
    assert_eq!(
        apply_request.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    assert!(
        apply_request.query.contains("fieldManager=a"),
        "{}",
        apply_request.query
    );

    kubectl
        .ok_with_input(
            &["apply", "--server-side", "--field-manager=a", "-f", "-"],
            &cluster_yaml("one", "v1.30.0", &["md-0"]),
        )
        .await;
    let cluster: Value = serde_json::from_str(
        &kubectl
            .ok(&[
                "get",
                "cluster",
                "one",
                "-o",
                "json",
                "--show-managed-fields",
            ])
            .await,
    )
    .unwrap();
    assert_eq!(deployment_names(&cluster), vec!["md-0"]);
    assert_eq!(
        cluster["metadata"]["generation"], 2,
        "the spec changed once"
    );

    let conflicting = "apiVersion: cluster.x-k8s.io/v1beta2\nkind: Cluster\nmetadata:\n  name: one\n  namespace: default\nspec:\n  topology:\n    version: v1.31.0\n";
    let refused = kubectl
        .run_with_input(
            &["apply", "--server-side", "--field-manager=b", "-f", "-"],
            conflicting,
        )
        .await;
    assert_ne!(refused.code, 0);
    assert!(
        refused
            .stderr
            .contains(r#"Apply failed with 1 conflict: conflict with "a": .spec.topology.version"#),
        "{}",
        refused.stderr
    );

    kubectl
        .ok_with_input(
            &[
                "apply",
                "--server-side",
                "--field-manager=b",
                "--force-conflicts",
                "-f",
                "-",
            ],
            conflicting,
        )
        .await;
    let cluster: Value = serde_json::from_str(
        &kubectl
            .ok(&[
                "get",
                "cluster",
                "one",
                "-o",
                "json",
                "--show-managed-fields",
            ])
            .await,
    )
    .unwrap();
    assert_eq!(cluster["spec"]["topology"]["version"], "v1.31.0");
    assert_eq!(
        deployment_names(&cluster),
        vec!["md-0"],
        "b's apply keeps a's list"
    );
    let managers = managers(&cluster);
    let fields_of = |name: &str| {
        managers
            .iter()
            .find(|(manager, operation, _)| manager == name && operation == "Apply")
            .map(|(_, _, fields)| fields.clone())
            .unwrap_or_else(|| panic!("an Apply entry for {name}: {managers:?}"))
    };
    let owned_by_a = fields_of("a");
    let owned_by_b = fields_of("b");
    assert_eq!(
        owned_by_b,
        json!({"f:spec": {"f:topology": {"f:version": {}}}})
    );
    assert!(
        owned_by_a["f:spec"]["f:topology"]
            .get("f:version")
            .is_none(),
        "forcing took version from a: {owned_by_a}"
    );
    assert_eq!(
        owned_by_a["f:spec"]["f:topology"]["f:workers"]["f:machineDeployments"],
        json!({"k:{\"name\":\"md-0\"}": {".": {}, "f:class": {}, "f:name": {}, "f:replicas": {}}})
    );
    assert_eq!(owned_by_a["f:metadata"], json!({"f:labels": {"f:a": {}}}));
}

/// Label selectors (kubernetes.io/docs/concepts/overview/working-with-objects/labels):
/// equality-based `a=b` and set-based `x in (1,2)` select on list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_selectors_select_with_kubectl() {
    let server = start().await;
    let kubectl = Kubectl::new(&server);
    kubectl
        .ok_with_input(
            &["apply", "--server-side", "--field-manager=a", "-f", "-"],
            &cluster_yaml("labelled", "v1.30.0", &[]),
        )
        .await;
    let unlabelled = cluster_yaml("plain", "v1.30.0", &[]).replace("  labels:\n    a: b\n", "");
    kubectl
        .ok_with_input(
            &["apply", "--server-side", "--field-manager=a", "-f", "-"],
            &unlabelled,
        )
        .await;
    let selected = kubectl
        .ok(&["get", "clusters", "-l", "a=b", "-o", "name"])
        .await;
    assert_eq!(selected.trim(), "cluster.cluster.x-k8s.io/labelled");

    // `kubectl create secret` sends protobuf, which the stand-in does not read: apply
    // (JSON) creates them, and `kubectl label` (a strategic merge patch) labels them.
    let secrets: String = ["1", "2", "3"]
        .iter()
        .map(|value| format!("---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: s{value}\nstringData:\n  k: v\n"))
        .collect();
    kubectl
        .ok_with_input(
            &["apply", "--server-side", "--field-manager=a", "-f", "-"],
            &secrets,
        )
        .await;
    for value in ["1", "2", "3"] {
        kubectl
            .ok(&[
                "label",
                "secret",
                &format!("s{value}"),
                &format!("x={value}"),
            ])
            .await;
    }
    let selected = kubectl
        .ok(&["get", "secrets", "-l", "x in (1,2)", "-o", "name"])
        .await;
    assert_eq!(
        selected.lines().collect::<Vec<_>>(),
        vec!["secret/s1", "secret/s2"]
    );
    let not_selected = kubectl
        .ok(&["get", "secrets", "-l", "x notin (1,2)", "-o", "name"])
        .await;
    assert_eq!(not_selected.trim(), "secret/s3");
}

/// Finalizers (kubernetes.io/docs/concepts/overview/working-with-objects/finalizers): a
/// delete of an object with finalizers only sets `metadata.deletionTimestamp`; the object
/// goes once a controller has removed its finalizers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalizers_hold_a_deleted_cluster_until_a_controller_removes_them() {
    let server = start().await;
    let kubectl = Kubectl::new(&server);
    let with_finalizer = |name: &str| {
        cluster_yaml(name, "v1.30.0", &["md-0"]).replace(
            "  labels:\n",
            "  finalizers:\n  - cluster.cluster.x-k8s.io\n  labels:\n",
        )
    };
    kubectl
        .ok_with_input(
            &["apply", "--server-side", "--field-manager=a", "-f", "-"],
            &with_finalizer("held"),
        )
        .await;
    kubectl
        .ok(&["delete", "cluster", "held", "--wait=false"])
        .await;
    let cluster: Value =
        serde_json::from_str(&kubectl.ok(&["get", "cluster", "held", "-o", "json"]).await).unwrap();
    assert!(
        cluster["metadata"]["deletionTimestamp"].is_string(),
        "{cluster}"
    );
    assert_eq!(cluster["metadata"]["deletionGracePeriodSeconds"], 0);

    let controller = server.controller("capi-controller");
    controller
        .remove_finalizers(&clusters(), Some("default"), "held")
        .expect("the finalizer goes");
    let gone = kubectl.run(&["get", "cluster", "held"]).await;
    assert_ne!(gone.code, 0);
    assert!(
        gone.stderr
            .contains(r#"clusters.cluster.x-k8s.io "held" not found"#),
        "{}",
        gone.stderr
    );

    kubectl
        .ok_with_input(
            &["apply", "--server-side", "--field-manager=a", "-f", "-"],
            &with_finalizer("waited"),
        )
        .await;
    let background = controller.clone();
    let remover = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        background.remove_finalizers(&clusters(), Some("default"), "waited")
    });
    let started = std::time::Instant::now();
    kubectl
        .ok(&[
            "delete",
            "cluster",
            "waited",
            "--wait=true",
            "--timeout=15s",
        ])
        .await;
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "kubectl waited for the finalizer"
    );
    remover.await.unwrap().expect("the finalizer was removed");
    assert_eq!(
        controller
            .get(&clusters(), Some("default"), "waited")
            .unwrap_err()
            .code,
        404
    );
}

async fn wait_for_watch(server: &KubeApiServer, count: usize) {
    for _ in 0..200 {
        if server.open_watches() >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no watch opened");
}

/// `kubectl get --watch` (kubernetes.io/docs/reference/kubectl/generated/kubectl_get):
/// lists, then prints a line per change; `--watch-only` prints only the changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_watch_prints_changes() {
    let server = start().await;
    let kubectl = Kubectl::new(&server);
    let controller = server.controller("test");
    controller
        .apply(
            &clusters(),
            Some("default"),
            serde_json::from_str(&yaml_to_json(&cluster_yaml("before", "v1.30.0", &[]))).unwrap(),
        )
        .unwrap();

    let mut watching = kubectl
        .command(&["get", "clusters", "--watch", "-o", "name"])
        .spawn()
        .unwrap();
    let mut watching_only = kubectl
        .command(&[
            "get",
            "clusters",
            "--watch-only",
            "--output-watch-events",
            "-o",
            "json",
        ])
        .spawn()
        .unwrap();
    wait_for_watch(&server, 2).await;
    controller
        .apply(
            &clusters(),
            Some("default"),
            serde_json::from_str(&yaml_to_json(&cluster_yaml("after", "v1.30.0", &[]))).unwrap(),
        )
        .unwrap();
    controller
        .delete(&clusters(), Some("default"), "before")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let read = |child: &mut tokio::process::Child| {
        child.start_kill().unwrap();
        child.stdout.take().unwrap()
    };
    let mut text = String::new();
    read(&mut watching).read_to_string(&mut text).await.unwrap();
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        vec![
            "cluster.cluster.x-k8s.io/before",
            "cluster.cluster.x-k8s.io/after",
            "cluster.cluster.x-k8s.io/before"
        ]
    );
    let mut text = String::new();
    read(&mut watching_only)
        .read_to_string(&mut text)
        .await
        .unwrap();
    let events: Vec<(String, String)> = serde_json::Deserializer::from_str(&text)
        .into_iter::<Value>()
        .map(|event| event_summary(&event.expect("kubectl prints JSON events")))
        .collect();
    assert_eq!(
        events,
        vec![
            ("ADDED".into(), "after".into()),
            ("DELETED".into(), "before".into())
        ]
    );
}

fn yaml_to_json(yaml: &str) -> String {
    let value: Value = serde_saphyr::from_str(yaml).expect("YAML");
    value.to_string()
}

/// A watch read straight off the socket: the chunked stream of newline-delimited events.
struct WatchStream {
    reader: BufReader<TcpStream>,
}

impl WatchStream {
    async fn open(server: &KubeApiServer, path_and_query: &str) -> Self {
        let mut stream = TcpStream::connect(server.address()).await.expect("connect");
        let request = format!(
            "GET {path_and_query} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\r\n",
            server.address(),
            server.token()
        );
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut reader = BufReader::new(stream);
        let mut status = String::new();
        reader.read_line(&mut status).await.expect("status line");
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        loop {
            let mut header = String::new();
            reader.read_line(&mut header).await.expect("header");
            if header == "\r\n" {
                break;
            }
        }
        Self { reader }
    }

    /// The next event, or `None` when the stream ended.
    async fn next(&mut self) -> Option<Value> {
        let read = async {
            let mut size = String::new();
            self.reader.read_line(&mut size).await.ok()?;
            let size = usize::from_str_radix(size.trim(), 16).ok()?;
            if size == 0 {
                return None;
            }
            let mut chunk = vec![0; size + 2];
            self.reader.read_exact(&mut chunk).await.ok()?;
            serde_json::from_slice(&chunk[..size]).ok()
        };
        tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .expect("an event in time")
    }

    /// The next event that is not a bookmark.
    async fn next_change(&mut self) -> Value {
        loop {
            let event = self.next().await.expect("the stream goes on");
            if event["type"] != "BOOKMARK" {
                return event;
            }
        }
    }
}

fn event_summary(event: &Value) -> (String, String) {
    (
        event["type"].as_str().unwrap().to_owned(),
        event["object"]["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .to_owned(),
    )
}

fn cluster_object(name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "cluster.x-k8s.io/v1beta2",
        "kind": "Cluster",
        "metadata": {"name": name, "labels": labels},
        "spec": {"topology": {"classRef": {"name": "magnum"}, "version": "v1.30.0"}}
    })
}

/// Efficient detection of changes (kubernetes.io/docs/reference/using-api/api-concepts):
/// a watch from resourceVersion N gets every change after N; bookmarks carry only a
/// resourceVersion; a label-selector watch sees an object that stops matching as DELETED;
/// a resourceVersion older than the server keeps gives `410 Gone` ("Expired").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_watch_replays_bookmarks_filters_and_expires() {
    let server = start().await;
    let controller = server.controller("test");
    let from = server.resource_version();
    controller
        .apply(
            &clusters(),
            Some("default"),
            cluster_object("w", json!({"team": "x"})),
        )
        .unwrap();
    controller
        .apply(
            &clusters(),
            Some("default"),
            cluster_object("w", json!({"team": "x", "more": "y"})),
        )
        .unwrap();

    let path = "/apis/cluster.x-k8s.io/v1beta2/namespaces/default/clusters";
    let mut replay = WatchStream::open(
        &server,
        &format!("{path}?watch=1&allowWatchBookmarks=true&resourceVersion={from}"),
    )
    .await;
    let mut selected = WatchStream::open(
        &server,
        &format!("{path}?watch=true&labelSelector=team%3Dx"),
    )
    .await;
    assert_eq!(
        event_summary(&replay.next_change().await),
        ("ADDED".into(), "w".into())
    );
    assert_eq!(
        event_summary(&replay.next_change().await),
        ("MODIFIED".into(), "w".into())
    );
    assert_eq!(
        event_summary(&selected.next_change().await),
        ("ADDED".into(), "w".into()),
        "the current state first"
    );

    let bookmark = loop {
        let event = replay.next().await.expect("the stream goes on");
        if event["type"] == "BOOKMARK" {
            break event;
        }
    };
    assert_eq!(
        bookmark["object"]["metadata"],
        json!({"resourceVersion": server.resource_version().to_string()})
    );
    assert_eq!(bookmark["object"]["kind"], "Cluster");

    controller
        .apply(
            &clusters(),
            Some("default"),
            cluster_object("w", json!({"team": "z"})),
        )
        .unwrap();
    let modified = replay.next_change().await;
    assert_eq!(event_summary(&modified), ("MODIFIED".into(), "w".into()));
    assert_eq!(
        modified["object"]["metadata"]["labels"],
        json!({"team": "z"})
    );
    assert_eq!(
        event_summary(&selected.next_change().await),
        ("DELETED".into(), "w".into()),
        "stopped matching"
    );

    server.expire_next_watch();
    let mut expired =
        WatchStream::open(&server, &format!("{path}?watch=1&resourceVersion={from}")).await;
    let error = expired.next().await.expect("an ERROR event");
    assert_eq!(error["type"], "ERROR");
    assert_eq!(error["object"]["code"], 410);
    assert_eq!(error["object"]["reason"], "Expired");
    assert!(
        expired.next().await.is_none(),
        "the stream ends after the error"
    );
}

/// The same 410 from a history that no longer holds the events after N.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_older_than_the_history_expires() {
    let mut config = KubeApiConfig::new()
        .capi_crds(&["cluster.x-k8s.io_clusters.yaml"])
        .unwrap();
    config.history_limit = 3;
    let server = KubeApiServer::start(config).await.unwrap();
    let controller = server.controller("test");
    let from = server.resource_version();
    for index in 0..5 {
        controller
            .apply(
                &clusters(),
                Some("default"),
                cluster_object(&format!("c{index}"), json!({})),
            )
            .unwrap();
    }
    let path = "/apis/cluster.x-k8s.io/v1beta2/clusters";
    let mut stream =
        WatchStream::open(&server, &format!("{path}?watch=1&resourceVersion={from}")).await;
    let error = stream.next().await.expect("an ERROR event");
    let floor = server.resource_version() - 3;
    assert_eq!(
        error["object"]["message"],
        format!("too old resource version: {from} ({floor})")
    );
    assert_eq!(error["object"]["code"], 410);

    let mut recent =
        WatchStream::open(&server, &format!("{path}?watch=1&resourceVersion={floor}")).await;
    assert_eq!(
        event_summary(&recent.next_change().await),
        ("ADDED".into(), "c2".into())
    );
}

/// The status subresource (kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/
/// custom-resource-definitions/#status-subresource): PUT to /status changes only status,
/// PUT to the object ignores status, and metadata.generation moves only with the spec.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_subresource_and_generation() {
    let server = start().await;
    let collection = "/apis/cluster.x-k8s.io/v1beta2/namespaces/default/clusters";
    let object = format!("{collection}/s");
    let (code, created) = api(
        &server,
        "POST",
        collection,
        "application/json",
        &cluster_object("s", json!({})),
    )
    .await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["metadata"]["generation"], 1);
    assert!(created["metadata"]["uid"]
        .as_str()
        .is_some_and(|uid| uid.len() == 36));

    let mut write = created.clone();
    write["status"] = json!({"phase": "Provisioned"});
    write["spec"]["topology"]["version"] = json!("v1.99.0");
    let (code, status_written) = api(
        &server,
        "PUT",
        &format!("{object}/status"),
        "application/json",
        &write,
    )
    .await;
    assert_eq!(code, 200, "{status_written}");
    assert_eq!(status_written["status"], json!({"phase": "Provisioned"}));
    assert_eq!(
        status_written["spec"]["topology"]["version"], "v1.30.0",
        "a status write leaves the spec"
    );
    assert_eq!(status_written["metadata"]["generation"], 1);

    let mut write = status_written.clone();
    write["status"] = json!({"phase": "Failed"});
    write["metadata"]["labels"] = json!({"only": "metadata"});
    let (_, main_written) = api(&server, "PUT", &object, "application/json", &write).await;
    assert_eq!(
        main_written["status"],
        json!({"phase": "Provisioned"}),
        "the main resource ignores status"
    );
    assert_eq!(
        main_written["metadata"]["labels"],
        json!({"only": "metadata"})
    );
    assert_eq!(
        main_written["metadata"]["generation"], 1,
        "metadata is not spec"
    );

    let mut write = main_written.clone();
    write["spec"]["topology"]["version"] = json!("v1.31.0");
    let (_, spec_written) = api(&server, "PUT", &object, "application/json", &write).await;
    assert_eq!(spec_written["metadata"]["generation"], 2);
    let newer: u64 = spec_written["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let older: u64 = main_written["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(newer > older);

    let (code, stale) = api(&server, "PUT", &object, "application/json", &main_written).await;
    assert_eq!(code, 409);
    assert_eq!(stale["reason"], "Conflict");
    assert!(
        stale["message"]
            .as_str()
            .unwrap()
            .contains("the object has been modified"),
        "{stale}"
    );

    let (_, unchanged) = api(&server, "PUT", &object, "application/json", &spec_written).await;
    assert_eq!(
        unchanged["metadata"]["resourceVersion"], spec_written["metadata"]["resourceVersion"],
        "a no-op write is not written"
    );
}

fn assert_status(body: &Value, code: u16, reason: &str) {
    assert_eq!(body["kind"], "Status", "{body}");
    assert_eq!(body["apiVersion"], "v1");
    assert_eq!(body["status"], "Failure");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["reason"], reason, "{body}");
}

/// API errors are `Status` objects (kubernetes.io/docs/reference/using-api/api-concepts/
/// #http-status-codes): 404 NotFound, 409 AlreadyExists, 401 Unauthorized, 413 for bodies
/// over the 3 MiB limit, 422 for an apply without fieldManager, and strict field
/// validation refusing an unknown field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_status_bodies() {
    let server = start().await;
    let collection = "/apis/cluster.x-k8s.io/v1beta2/namespaces/default/clusters";
    let (code, missing) = api(
        &server,
        "GET",
        &format!("{collection}/nothing"),
        "application/json",
        &Value::Null,
    )
    .await;
    assert_eq!(code, 404);
    assert_status(&missing, 404, "NotFound");
    assert_eq!(
        missing["message"],
        r#"clusters.cluster.x-k8s.io "nothing" not found"#
    );
    assert_eq!(
        missing["details"],
        json!({"name": "nothing", "group": "cluster.x-k8s.io", "kind": "clusters"})
    );

    let (code, _) = api(
        &server,
        "POST",
        collection,
        "application/json",
        &cluster_object("twice", json!({})),
    )
    .await;
    assert_eq!(code, 201);
    let (code, exists) = api(
        &server,
        "POST",
        collection,
        "application/json",
        &cluster_object("twice", json!({})),
    )
    .await;
    assert_eq!(code, 409);
    assert_status(&exists, 409, "AlreadyExists");

    let (code, _, body) = http(
        &server,
        "GET",
        collection,
        "application/json",
        "",
        Some("wrong"),
    )
    .await;
    assert_eq!(code, 401);
    assert_status(&serde_json::from_str(&body).unwrap(), 401, "Unauthorized");
    let closed = KubeApiServer::start(KubeApiConfig::new()).await.unwrap();
    let (code, _, _) = http(
        &closed,
        "GET",
        "/api/v1/namespaces",
        "application/json",
        "",
        None,
    )
    .await;
    assert_eq!(code, 401, "no token and no anonymous access");

    let huge = format!("{{\"pad\":\"{}\"}}", "x".repeat(3 * 1024 * 1024));
    let (code, _, body) = http(
        &server,
        "POST",
        collection,
        "application/json",
        &huge,
        Some(server.token()),
    )
    .await;
    assert_eq!(code, 413);
    assert_status(
        &serde_json::from_str(&body).unwrap(),
        413,
        "RequestEntityTooLarge",
    );

    let (code, invalid) = api(
        &server,
        "PATCH",
        &format!("{collection}/x"),
        "application/apply-patch+yaml",
        &cluster_object("x", json!({})),
    )
    .await;
    assert_eq!(code, 422);
    assert_status(&invalid, 422, "Invalid");
    assert_eq!(
        invalid["message"],
        r#"PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch"#
    );

    let mut unknown = cluster_object("strict", json!({}));
    unknown["spec"]["colour"] = json!("blue");
    let (code, refused) = api(
        &server,
        "POST",
        &format!("{collection}?fieldValidation=Strict"),
        "application/json",
        &unknown,
    )
    .await;
    assert_eq!(code, 400);
    assert_status(&refused, 400, "BadRequest");
    assert_eq!(
        refused["message"],
        r#"Cluster in version "v1beta2" cannot be handled as a Cluster: strict decoding error: unknown field "spec.colour""#
    );

    let kubectl = Kubectl::new(&server);
    let yaml = cluster_yaml("strict", "v1.30.0", &[]).replace("spec:\n", "spec:\n  colour: blue\n");
    let run = kubectl
        .run_with_input(
            &["apply", "--server-side", "--field-manager=a", "-f", "-"],
            &yaml,
        )
        .await;
    assert_ne!(run.code, 0);
    assert!(
        run.stderr
            .contains(".spec.colour: field not declared in schema"),
        "{}",
        run.stderr
    );
}

/// Test hook: the management cluster away, refusing connections and then answering 503,
/// and back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_refuses_then_recovers() {
    let server = start().await;
    server.outage(Outage::Refuse, Duration::from_secs(30));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        TcpStream::connect(server.address()).await.is_err(),
        "connections are refused"
    );
    server.end_outage();
    tokio::time::sleep(Duration::from_millis(100)).await;

    server.outage(Outage::Unavailable, Duration::from_millis(400));
    let (code, unavailable) = api(
        &server,
        "GET",
        "/api/v1/namespaces",
        "application/json",
        &Value::Null,
    )
    .await;
    assert_eq!(code, 503);
    assert_status(&unavailable, 503, "ServiceUnavailable");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (code, namespaces) = api(
        &server,
        "GET",
        "/api/v1/namespaces",
        "application/json",
        &Value::Null,
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(namespaces["kind"], "NamespaceList");
}

/// Retrieving large results in chunks (kubernetes.io/docs/reference/using-api/api-concepts/
/// #retrieving-large-results-sets-in-chunks): `limit` with `continue` walks the whole list;
/// list metadata carries the resourceVersion to watch from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_page_with_limit_and_continue() {
    let server = start().await;
    let controller = server.controller("test");
    for name in ["a", "b", "c"] {
        controller
            .create(
                &ResourceRef::core("configmaps"),
                Some("default"),
                json!({"metadata": {"name": name}, "data": {"k": name}}),
            )
            .unwrap();
    }
    let path = "/api/v1/namespaces/default/configmaps";
    let (_, first) = api(
        &server,
        "GET",
        &format!("{path}?limit=2"),
        "application/json",
        &Value::Null,
    )
    .await;
    assert_eq!(first["kind"], "ConfigMapList");
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    let token = first["metadata"]["continue"]
        .as_str()
        .expect("a continue token")
        .to_owned();
    let (_, rest) = api(
        &server,
        "GET",
        &format!("{path}?limit=2&continue={token}"),
        "application/json",
        &Value::Null,
    )
    .await;
    let names: Vec<&str> = rest["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["c"]);
    assert!(rest["metadata"].get("continue").is_none());
    assert_eq!(
        rest["metadata"]["resourceVersion"],
        server.resource_version().to_string()
    );
}

/// A watcher that does not read is dropped once its queue is full, and writers never
/// wait for it (kube-apiserver closes watches that cannot keep up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_watcher_is_dropped_and_writers_go_on() {
    let mut config = KubeApiConfig::new();
    config.watch_buffer = 4;
    let server = KubeApiServer::start(config).await.unwrap();
    let controller = server.controller("test");
    let _stalled =
        WatchStream::open(&server, "/api/v1/namespaces/default/configmaps?watch=1").await;
    wait_for_watch(&server, 1).await;
    let started = std::time::Instant::now();
    let payload = "x".repeat(256 * 1024);
    for index in 0..80 {
        controller
            .create(
                &ResourceRef::core("configmaps"),
                Some("default"),
                json!({"metadata": {"name": format!("big-{index}")}, "data": {"k": payload}}),
            )
            .unwrap();
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "writes did not wait for the watcher"
    );
    assert_eq!(server.open_watches(), 0, "the stalled watcher was dropped");
}
