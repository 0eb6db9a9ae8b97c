//! The local driver's node sandbox, attacked as a hostile tenant would: with a client
//! certificate signed through the API (what `coe cluster config` does), against the Docker API
//! of the tenant's own cluster. Every escape must fail with a message naming what was refused;
//! an ordinary workload must keep working.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Value};

use crate::local_driver::{client_config_of, docker, leftovers, run, state_leftovers};
use crate::support::{engines, Caller, TestApp};

const TENANT: Caller = Caller {
    project_id: "p-tenant",
    user_id: "u-tenant",
    roles: "member,reader",
};
const NEIGHBOUR: Caller = Caller {
    project_id: "p-neighbour",
    user_id: "u-neighbour",
    roles: "member,reader",
};
const IMAGE: &str = "magnum/local-node:1";
const REFUSED: &str = "authorization denied by plugin magnum-authz";

struct Cluster {
    uuid: String,
    /// `tcp://<master>:2376`
    address: String,
    masters: Vec<String>,
    nodes: Vec<String>,
    /// Where ca.pem, cert.pem and key.pem are.
    client: tempfile::TempDir,
}

impl Cluster {
    fn docker(&self, arguments: &[&str]) -> (bool, String) {
        docker(self.client.path(), &self.address, arguments)
    }

    /// Asserts that the Docker API refuses `arguments`, naming `option`.
    fn refuses(&self, arguments: &[&str], option: &str) {
        let (ok, output) = self.docker(arguments);
        assert!(!ok, "docker {arguments:?} must be refused: {output}");
        assert!(
            output.contains(REFUSED) && output.contains(option),
            "docker {arguments:?} must be refused naming {option}: {output}"
        );
    }

    /// Whether a container of this cluster can open a TCP connection to `address:port`
    /// (busybox nc: 1 when the connection fails; 0, or killed by timeout, once connected).
    fn connects(&self, address: &str, port: &str) -> bool {
        let script = format!("timeout 6 nc -w 3 {address} {port} </dev/null; echo \"exit=$?\"");
        let (ok, output) = self.docker(&["run", "--rm", IMAGE, "sh", "-c", &script]);
        assert!(ok, "{output}");
        // 143: connected, then stopped by timeout (the other end kept the connection open).
        let status = output.split("exit=").nth(1).map(|rest| {
            rest.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        });
        match status.as_deref() {
            Some("0" | "143") => true,
            Some("1") => false,
            _ => panic!("nc did not run as expected: {output}"),
        }
    }

    /// A raw Docker API request through curl with the tenant's certificate: (status, body).
    fn raw(&self, method: &str, path: &str, content_type: &str, body: &str) -> (u16, String) {
        let url = format!(
            "https://{}{path}",
            self.address.trim_start_matches("tcp://")
        );
        let output = std::process::Command::new("curl")
            .args([
                "-sS",
                "-m",
                "20",
                "--cacert",
                "ca.pem",
                "--cert",
                "cert.pem",
                "--key",
                "key.pem",
                "-X",
                method,
                "-H",
                &format!("Content-Type: {content_type}"),
                "--data-binary",
                body,
                "-w",
                "\n%{http_code}",
                &url,
            ])
            .current_dir(self.client.path())
            .output()
            .expect("curl runs");
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (status.trim().parse().unwrap_or(0), body.to_owned())
    }

    fn raw_refuses(&self, method: &str, path: &str, content_type: &str, body: &str, option: &str) {
        let (status, reply) = self.raw(method, path, content_type, body);
        assert_eq!(
            status, 403,
            "{method} {path} {body} must be refused: {reply}"
        );
        assert!(
            reply.contains(REFUSED) && reply.contains(option),
            "{method} {path} must be refused naming {option}: {reply}"
        );
    }
}

async fn create_cluster(app: &TestApp, caller: Caller, name: &str, workers: i64) -> Cluster {
    let reply = app
        .send_at(
            "latest",
            "POST",
            "/v1/clusters",
            caller,
            Some(json!({"cluster_template_id": "sandboxed", "name": name, "node_count": workers})),
        )
        .await;
    assert_eq!(reply.status, 202, "{}", String::from_utf8_lossy(&reply.raw));
    let uuid = reply.body["uuid"].as_str().unwrap().to_owned();
    let cluster: Value = app
        .wait_for_cluster(&uuid, caller, 120, |reply| {
            reply.body["status"] != "CREATE_IN_PROGRESS"
        })
        .await
        .body;
    assert_eq!(cluster["status"], "CREATE_COMPLETE", "{cluster}");
    let client = tempfile::tempdir().unwrap();
    client_config_of(app, caller, &uuid, client.path()).await;
    let addresses = |key: &str| -> Vec<String> {
        cluster[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|address| address.as_str().unwrap().to_owned())
            .collect()
    };
    Cluster {
        uuid,
        address: cluster["api_address"].as_str().unwrap().to_owned(),
        masters: addresses("master_addresses"),
        nodes: addresses("node_addresses"),
        client,
    }
}

/// A web server on every host address, as an operator's host may run one.
fn host_web_server() -> u16 {
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request);
            let _ = stream.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 11\r\n\r\nhost secret");
        }
    });
    port
}

/// The host PID of a node's PID 1 (its docker-init), found through its sandbox's record.
fn node_init_pid(state: &Path, cluster: &str, node: &str) -> i32 {
    let recorded = std::fs::read_to_string(
        state
            .join("local-driver/clusters")
            .join(cluster)
            .join(node)
            .join("node.pid"),
    )
    .unwrap();
    let unshare: i32 = recorded.trim().parse().unwrap();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        if fields[1].parse::<i32>().ok() == Some(unshare) {
            return entry.file_name().to_str().unwrap().parse().unwrap();
        }
    }
    panic!("node {node} of {cluster} has no PID 1");
}

/// With routes between the clusters (which nodes never have), only the firewall tables stand
/// between them: without the tables a container reaches the other cluster, with them it does
/// not, and the health monitor puts back a table that disappeared (a host `nft flush`).
async fn firewall_holds_with_routes(ours: &Cluster, theirs: &Cluster) {
    let forwarding = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").unwrap();
    let netns = |cluster: &Cluster| format!("mc{}-n1", &cluster.uuid.replace('-', "")[..8]);
    let gateway = |cluster: &Cluster| {
        let (prefix, _) = cluster.masters[0].rsplit_once('.').unwrap();
        format!("{prefix}.1")
    };
    for cluster in [ours, theirs] {
        let (ok, output) = run(
            "ip",
            &[
                "-n",
                &netns(cluster),
                "route",
                "replace",
                "default",
                "via",
                &gateway(cluster),
            ],
            Path::new("/"),
        );
        assert!(ok, "{output}");
    }
    let table = |cluster: &Cluster| format!("magnum_{}", &cluster.uuid.replace('-', "")[..8]);
    let tables = || run("nft", &["list", "tables"], Path::new("/")).1;
    assert!(tables().contains(&table(ours)) && tables().contains(&table(theirs)));
    let blocked = !ours.connects(&theirs.masters[0], "2376");
    for cluster in [ours, theirs] {
        let (ok, output) = run(
            "nft",
            &["delete", "table", "inet", &table(cluster)],
            Path::new("/"),
        );
        assert!(ok, "{output}");
    }
    let reached = ours.connects(&theirs.masters[0], "2376");
    // The health monitor (every 2 s) installs the tables again.
    let mut restored = false;
    for _ in 0..50 {
        let listed = tables();
        if listed.contains(&table(ours)) && listed.contains(&table(theirs)) {
            restored = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let blocked_again = !ours.connects(&theirs.masters[0], "2376");
    for cluster in [ours, theirs] {
        run(
            "ip",
            &["-n", &netns(cluster), "route", "del", "default"],
            Path::new("/"),
        );
    }
    std::fs::write("/proc/sys/net/ipv4/ip_forward", forwarding.trim()).unwrap();
    assert!(
        blocked,
        "the firewall lets a routed packet through to the other cluster"
    );
    assert!(
        reached,
        "without the tables the routed connection works (the check is real)"
    );
    assert!(restored, "the health monitor put the firewall tables back");
    assert!(
        blocked_again,
        "the restored tables block the other cluster again"
    );
}

/// The host PID of the authorization plugin running in the node whose PID 1 is `init`.
fn plugin_of(init: i32) -> i32 {
    let namespace = std::fs::read_link(format!("/proc/{init}/ns/pid")).unwrap();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let command = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if !command.starts_with(b"/opt/magnum/magnum-node-authz\0") {
            continue;
        }
        if std::fs::read_link(entry.path().join("ns/pid"))
            .ok()
            .as_ref()
            == Some(&namespace)
        {
            return entry.file_name().to_str().unwrap().parse().unwrap();
        }
    }
    panic!("no authorization plugin runs in the node of PID {init}");
}

#[tokio::test]
async fn a_hostile_tenant_cannot_leave_its_nodes() {
    let engine = engines()[0];
    let app = TestApp::spawn_with(engine, magnumd::Role::All, |config| {
        config.drivers.local.network_pool = "10.94.0.0/16".to_owned();
    })
    .await;
    let app = Arc::new(app);
    let outcome = tokio::spawn({
        let app = app.clone();
        async move { attacks(&app).await }
    })
    .await;
    let state: PathBuf = app.notifications.parent().unwrap().to_owned();
    // Whatever happened, nothing is left running on the host.
    for caller in [TENANT, NEIGHBOUR] {
        let listed = app
            .send_at("latest", "GET", "/v1/clusters", caller, None)
            .await;
        for cluster in listed.body["clusters"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let uuid = cluster["uuid"].as_str().unwrap_or_default().to_owned();
            app.delete(&format!("/v1/clusters/{uuid}"), caller).await;
            app.wait_for_cluster(&uuid, caller, 120, |reply| reply.status == 404)
                .await;
            assert_eq!(leftovers(&uuid), Vec::<String>::new());
            assert_eq!(state_leftovers(&state, &uuid), Vec::<String>::new());
        }
    }
    Arc::try_unwrap(app).ok().unwrap().stop().await;
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

async fn attacks(app: &TestApp) {
    let template = app
        .create_template(TENANT, json!({"name": "sandboxed", "public": false}))
        .await;
    app.create_template(NEIGHBOUR, json!({"name": "sandboxed", "public": false}))
        .await;
    let state: PathBuf = app.notifications.parent().unwrap().to_owned();
    let ours = create_cluster(app, TENANT, "ours", 1).await;
    let theirs = create_cluster(app, NEIGHBOUR, "theirs", 0).await;
    assert_ne!(template["uuid"], Value::Null);

    // --- Host files: every way to mount them is refused. ---
    ours.refuses(
        &[
            "run",
            "--rm",
            "-v",
            "/:/host",
            IMAGE,
            "cat",
            "/host/etc/hostname",
        ],
        "Binds",
    );
    ours.refuses(
        &["run", "--rm", "-v", "/etc:/host-etc:ro", IMAGE, "true"],
        "Binds",
    );
    ours.refuses(
        &[
            "run",
            "--rm",
            "--mount",
            "type=bind,source=/,target=/host",
            IMAGE,
            "true",
        ],
        "bind",
    );
    ours.refuses(
        &[
            "volume",
            "create",
            "--driver",
            "local",
            "--opt",
            "type=none",
            "--opt",
            "o=bind",
            "--opt",
            "device=/",
            "escape",
        ],
        "DriverOpts",
    );
    ours.refuses(
        &[
            "run",
            "--rm",
            "--mount",
            "type=volume,source=escape,target=/host,volume-opt=o=bind,volume-opt=device=/",
            IMAGE,
            "true",
        ],
        "DriverConfig",
    );
    ours.refuses(
        &[
            "service",
            "create",
            "--name",
            "escape",
            "--mount",
            "type=bind,source=/,target=/host",
            "--no-resolve-image",
            IMAGE,
            "sleep",
            "600",
        ],
        "bind",
    );
    // --- Privileges: refused whichever way they are asked for. ---
    ours.refuses(
        &["run", "--rm", "--privileged", IMAGE, "true"],
        "Privileged",
    );
    ours.refuses(
        &["run", "--rm", "--userns=host", IMAGE, "true"],
        "UsernsMode",
    );
    ours.refuses(&["run", "--rm", "--pid=host", IMAGE, "true"], "PidMode");
    ours.refuses(&["run", "--rm", "--ipc=host", IMAGE, "true"], "IpcMode");
    ours.refuses(
        &["run", "--rm", "--cap-add", "SYS_ADMIN", IMAGE, "true"],
        "SYS_ADMIN",
    );
    ours.refuses(
        &["run", "--rm", "--device", "/dev/null:/dev/x", IMAGE, "true"],
        "Devices",
    );
    ours.refuses(
        &[
            "run",
            "--rm",
            "--security-opt",
            "seccomp=unconfined",
            IMAGE,
            "true",
        ],
        "seccomp",
    );
    ours.refuses(
        &[
            "run",
            "--rm",
            "--security-opt",
            "apparmor=unconfined",
            IMAGE,
            "true",
        ],
        "apparmor",
    );
    ours.refuses(
        &["run", "--rm", "--cgroup-parent", "/", IMAGE, "true"],
        "CgroupParent",
    );
    ours.refuses(
        &[
            "service",
            "create",
            "--name",
            "admin",
            "--cap-add",
            "SYS_ADMIN",
            "--no-resolve-image",
            IMAGE,
            "sleep",
            "600",
        ],
        "SYS_ADMIN",
    );
    ours.refuses(
        &["run", "--rm", "--ulimit", "rtprio=99:99", IMAGE, "true"],
        "rtprio",
    );
    ours.refuses(&["swarm", "leave", "--force"], "swarm");
    ours.refuses(
        &["swarm", "join", "--token", "SWMTKN-1-x", "10.94.250.1:2377"],
        "swarm",
    );
    let build = tempfile::tempdir().unwrap();
    std::fs::write(
        build.path().join("Dockerfile"),
        format!("FROM {IMAGE}\nRUN true\n"),
    )
    .unwrap();
    let (ok, output) = std::process::Command::new("docker")
        .args([
            "--tlsverify",
            "--tlscacert",
            "ca.pem",
            "--tlscert",
            "cert.pem",
            "--tlskey",
            "key.pem",
        ])
        .args([
            "-H",
            &ours.address,
            "build",
            "--cgroup-parent",
            "/",
            "-t",
            "escape",
        ])
        .arg(build.path())
        .current_dir(ours.client.path())
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .map(|output| {
            (
                output.status.success(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            )
        })
        .unwrap();
    assert!(
        !ok && output.contains(REFUSED) && output.contains("build"),
        "{output}"
    );
    // --- The raw API, and the ways a naive plugin is bypassed. ---
    let create = "/v1.41/containers/create";
    ours.raw_refuses(
        "POST",
        create,
        "application/json",
        r#"{"Image":"magnum/local-node:1","hostconfig":{"binds":["/:/host"]}}"#,
        "Binds",
    );
    ours.raw_refuses(
        "POST",
        create,
        "application/json",
        r#"{"Image":"magnum/local-node:1","HostConfig":{"Bindſ":["/:/host"]}}"#,
        "not ASCII",
    );
    ours.raw_refuses(
        "POST",
        create,
        "application/json",
        r#"{"Image":"magnum/local-node:1","HostConfig":{"Binds":["/:/host"]},"HostConfig":{"Memory":0}}"#,
        "more than once",
    );
    ours.raw_refuses(
        "POST",
        "/v1.41/containers/%63reate",
        "application/json",
        r#"{"Image":"magnum/local-node:1","HostConfig":{"Privileged":true}}"#,
        "Privileged",
    );
    ours.raw_refuses(
        "POST",
        "/v1.41/services/create",
        "text/plain",
        r#"{"Name":"plain","TaskTemplate":{"ContainerSpec":{"Image":"magnum/local-node:1","Mounts":[{"Type":"bind","Source":"/","Target":"/host"}]}}}"#,
        "could not be inspected",
    );
    ours.raw_refuses(
        "POST",
        "/v1.23/containers/anything/start",
        "application/json",
        r#"{"Binds":["/:/host"],"Privileged":true}"#,
        "below 1.24",
    );
    ours.raw_refuses(
        "POST",
        "/v1.41/plugins/pull?remote=vieux/sshfs",
        "application/json",
        "[]",
        "plugin installation",
    );
    // Nothing refused was created on the way.
    let (_, volumes) = ours.docker(&["volume", "ls", "-q"]);
    assert!(
        !volumes.lines().any(|volume| volume == "escape"),
        "{volumes}"
    );
    let (_, services) = ours.docker(&["service", "ls", "--format", "{{.Name}}"]);
    assert_eq!(services.trim(), "", "{services}");

    // --- What a container sees: its own processes, an unprivileged uid on the host. ---
    let (ok, processes) = ours.docker(&["run", "--rm", IMAGE, "ps", "-o", "pid,args"]);
    assert!(ok, "{processes}");
    assert!(
        !processes.contains("dockerd") && !processes.contains("magnumd"),
        "{processes}"
    );
    assert_eq!(processes.lines().count(), 2, "only ps itself: {processes}");
    let (ok, map) = ours.docker(&["run", "--rm", IMAGE, "cat", "/proc/self/uid_map"]);
    assert!(ok, "{map}");
    let fields: Vec<u64> = map
        .split_whitespace()
        .map(|field| field.parse().unwrap())
        .collect();
    assert_eq!(fields[0], 0, "{map}");
    assert!(
        fields[1] >= 16 * 65_536,
        "container root is host uid {}",
        fields[1]
    );
    assert_eq!(fields[2], 65_536, "{map}");
    // Every node has a range of its own, above what useradd may hand out.
    let subuid = |cluster: &Cluster, node: &str| -> u64 {
        let text = std::fs::read_to_string(
            state
                .join("local-driver/clusters")
                .join(&cluster.uuid)
                .join(node)
                .join("etc/subuid"),
        )
        .unwrap();
        text.trim().split(':').nth(1).unwrap().parse().unwrap()
    };
    let ranges = [
        subuid(&ours, "n1"),
        subuid(&ours, "n2"),
        subuid(&theirs, "n1"),
    ];
    assert_eq!(
        fields[1], ranges[0],
        "the manager's containers use the manager's range"
    );
    assert!(
        ranges.iter().all(|first| *first > 600_100_000),
        "{ranges:?}"
    );
    assert!(
        ranges[0] != ranges[1] && ranges[1] != ranges[2] && ranges[0] != ranges[2],
        "{ranges:?}"
    );

    // --- Beneath the plugin: the node itself has its own root, hostname and processes. ---
    let init = node_init_pid(&state, &ours.uuid, "n1");
    let node_root = PathBuf::from(format!("/proc/{init}/root"));
    let host_name = std::fs::read_to_string("/etc/hostname").unwrap();
    let node_name = std::fs::read_to_string(node_root.join("etc/hostname")).unwrap();
    assert_eq!(node_name.trim(), "ours-n1");
    assert_ne!(node_name, host_name);
    assert!(
        !node_root.join(state.strip_prefix("/").unwrap()).exists(),
        "the state directory is visible in the node"
    );
    assert!(!node_root.join("home").exists() && !node_root.join("work").exists());
    let status = std::fs::read_to_string(format!("/proc/{init}/status")).unwrap();
    let namespaced_pid = status
        .lines()
        .find(|line| line.starts_with("NSpid:"))
        .unwrap()
        .split_whitespace()
        .last()
        .unwrap()
        .to_owned();
    assert_eq!(namespaced_pid, "1", "{status}");
    for namespace in ["mnt", "pid", "uts", "ipc", "cgroup", "net"] {
        let host = std::fs::read_link(format!("/proc/self/ns/{namespace}")).unwrap();
        let node = std::fs::read_link(format!("/proc/{init}/ns/{namespace}")).unwrap();
        assert_ne!(
            host, node,
            "the node shares the host's {namespace} namespace"
        );
    }

    // --- Networks: not the host's services, not another cluster. ---
    let port = host_web_server();
    let mut direct = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    direct.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = String::new();
    direct.read_to_string(&mut answer).unwrap();
    assert!(
        answer.ends_with("host secret"),
        "the host's server works: {answer}"
    );
    let gateway = {
        let master = &ours.masters[0];
        let (prefix, _) = master.rsplit_once('.').unwrap();
        format!("{prefix}.1")
    };
    let host_address = std::process::Command::new("hostname")
        .arg("-I")
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
        .unwrap_or_default();
    let mut probes = vec![format!("{gateway}:{port}")];
    if let Some(address) = host_address
        .split_whitespace()
        .find(|address| !address.contains(':') && !address.starts_with("10.94."))
    {
        probes.push(format!("{address}:{port}"));
    }
    for probe in &probes {
        let (ok, output) = ours.docker(&[
            "run",
            "--rm",
            IMAGE,
            "wget",
            "-T",
            "3",
            "-qO-",
            &format!("http://{probe}/"),
        ]);
        assert!(
            !ok && !output.contains("host secret"),
            "a container reached the host's server at {probe}: {output}"
        );
    }
    // The cluster's own nodes reach each other (so the refusals above are the firewall's).
    assert!(
        ours.connects(&ours.nodes[0], "7946"),
        "a container reaches its own cluster's worker"
    );
    assert!(
        ours.connects(&ours.masters[0], "2377"),
        "a container reaches its own cluster's manager"
    );
    for port in ["2376", "2377", "7946"] {
        assert!(
            !ours.connects(&theirs.masters[0], port),
            "a container reached the other cluster's node on {port}"
        );
    }
    firewall_holds_with_routes(&ours, &theirs).await;

    // --- An ordinary workload still works. ---
    let (ok, output) = ours.docker(&[
        "service",
        "create",
        "--name",
        "web",
        "--replicas",
        "2",
        "--replicas-max-per-node",
        "1",
        "--endpoint-mode",
        "dnsrr",
        "--publish",
        "mode=host,target=80,published=8080",
        "--no-resolve-image",
        IMAGE,
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
    assert!(ok, "{output}");
    let client = reqwest::Client::new();
    for node in ours.masters.iter().chain(&ours.nodes) {
        let mut served = None;
        for _ in 0..100 {
            if let Ok(reply) = client
                .get(format!("http://{node}:8080/"))
                .timeout(std::time::Duration::from_secs(2))
                .send()
                .await
            {
                served = Some(reply.text().await.unwrap_or_default());
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        assert_eq!(served.as_deref(), Some("magnum-rs local node\n"), "{node}");
    }
    let (ok, output) = ours.docker(&[
        "run",
        "--rm",
        "-v",
        "data:/data",
        IMAGE,
        "sh",
        "-c",
        "echo kept > /data/file",
    ]);
    assert!(ok, "{output}");
    let (ok, output) = ours.docker(&[
        "run",
        "--rm",
        "--mount",
        "type=volume,source=data,target=/data",
        IMAGE,
        "cat",
        "/data/file",
    ]);
    assert!(ok && output.trim() == "kept", "{output}");
    let (ok, output) = ours.docker(&["volume", "create", "plain"]);
    assert!(ok, "{output}");
    let (ok, output) = ours.docker(&[
        "run",
        "--rm",
        "--cap-drop",
        "ALL",
        "--cap-add",
        "CHOWN",
        "--tmpfs",
        "/scratch",
        IMAGE,
        "true",
    ]);
    assert!(ok, "{output}");

    // --- The plugin dies: requests fail closed until it is back, then it refuses again. ---
    let plugin = plugin_of(init);
    let (ok, output) = run("kill", &["-KILL", &plugin.to_string()], Path::new("/"));
    assert!(ok, "{output}");
    let mut refused_again = false;
    for _ in 0..50 {
        let (ok, output) = ours.docker(&[
            "run",
            "--rm",
            "-v",
            "/:/host",
            IMAGE,
            "cat",
            "/host/etc/hostname",
        ]);
        assert!(
            !ok && !output.contains("ours-n1"),
            "a host bind mount was served while the plugin restarted: {output}"
        );
        if output.contains(REFUSED) {
            refused_again = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(refused_again, "the plugin came back");
    let (ok, output) = ours.docker(&["run", "--rm", IMAGE, "true"]);
    assert!(ok, "{output}");
}
