//! magnumd as an operator runs it: the process, its flags, configuration and signals.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The magnumd under test: this build's, or `MAGNUM_TEST_MAGNUMD` (a copy, with
/// magnum-node-authz beside it, lets a two-hour campaign run while the tree is rebuilt).
fn magnumd_binary() -> String {
    std::env::var("MAGNUM_TEST_MAGNUMD")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_magnumd").to_owned())
}

fn magnumd(arguments: &[&str]) -> Command {
    let mut command = Command::new(magnumd_binary());
    command.args(arguments);
    for (name, _) in std::env::vars() {
        if name.starts_with("MAGNUM_") && name.contains("__") {
            command.env_remove(name);
        }
    }
    command
}

fn run(command: &mut Command) -> (i32, String, String) {
    let output = command.output().expect("magnumd runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Starts `magnumd all` and returns it with the address it printed.
fn start_all(arguments: &[&str]) -> (Child, String) {
    let mut child = magnumd(arguments)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = lines.next().expect("magnumd prints its address").unwrap();
    let address = line
        .strip_prefix("magnumd listening on http://")
        .and_then(|rest| rest.strip_suffix("/v1"))
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    (child, address)
}

fn terminate(child: &mut Child) -> i32 {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    for _ in 0..100 {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    panic!("magnumd did not stop on SIGTERM");
}

fn http(method: &str, address: &str, path: &str, body: Option<&str>) -> (u16, String) {
    http_at(None, method, address, path, body)
}

/// Nodegroups exist from microversion 1.9 on.
fn http_latest(method: &str, address: &str, path: &str, body: Option<&str>) -> (u16, String) {
    http_at(Some("container-infra latest"), method, address, path, body)
}

fn http_at(
    version: Option<&str>,
    method: &str,
    address: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, String) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let mut request =
            client.request(method.parse().unwrap(), format!("http://{address}{path}"));
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/json")
                .body(body.to_owned());
        }
        if let Some(version) = version {
            request = request.header("OpenStack-API-Version", version);
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    })
}

#[test]
fn help_documents_every_subcommand() {
    let (code, stdout, _) = run(&mut magnumd(&["--help"]));
    assert_eq!(code, 0);
    for subcommand in ["all", "api", "conductor", "db"] {
        assert!(
            stdout.contains(&format!("\n  {subcommand} ")),
            "{subcommand} in:\n{stdout}"
        );
    }
    for flag in [
        "--config",
        "--listen",
        "--state-dir",
        "--database-url",
        "--allow-insecure-noauth",
    ] {
        assert!(stdout.contains(flag), "{flag}");
    }
    for subcommand in [&["all"][..], &["api"], &["conductor"], &["db", "upgrade"]] {
        let mut arguments = subcommand.to_vec();
        arguments.push("--help");
        let (code, stdout, _) = run(&mut magnumd(&arguments));
        assert_eq!(code, 0);
        assert!(
            stdout.contains("Example: magnumd"),
            "{subcommand:?}:\n{stdout}"
        );
    }
    let (_, stdout, _) = run(&mut magnumd(&["db", "--help"]));
    assert!(stdout.contains("upgrade") && stdout.contains("version"));
}

#[test]
fn bad_configuration_stops_start_up_naming_the_key() {
    let directory = tempfile::tempdir().unwrap();
    let file = directory.path().join("magnum.toml");
    std::fs::write(&file, "[server]\nlisten = \"127.0.0.1:0\"\nbogus_key = 1\n").unwrap();
    let state = directory.path().join("state");
    let (code, _, stderr) = run(&mut magnumd(&[
        "all",
        "--config",
        file.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ]));
    assert_ne!(code, 0);
    assert!(stderr.contains("bogus_key"), "{stderr}");
    assert!(
        !state.exists(),
        "nothing is created before the configuration is valid"
    );

    let (code, _, stderr) = run(magnumd(&["all", "--state-dir", state.to_str().unwrap()])
        .env("MAGNUM_API__MAX_LIMIT", "lots"));
    assert_ne!(code, 0);
    assert!(stderr.contains("max_limit"), "{stderr}");

    let (code, _, stderr) = run(&mut magnumd(&[
        "all",
        "--listen",
        "not-an-address",
        "--state-dir",
        state.to_str().unwrap(),
    ]));
    assert_ne!(code, 0);
    assert!(stderr.contains("server.listen"), "{stderr}");

    let (code, _, stderr) = run(&mut magnumd(&[
        "all",
        "--database-url",
        "oracle://db/magnum",
    ]));
    assert_ne!(code, 0);
    assert!(stderr.contains("database.url"), "{stderr}");
}

#[test]
fn noauth_is_refused_beyond_loopback_unless_forced() {
    let directory = tempfile::tempdir().unwrap();
    let state = directory.path().to_str().unwrap();
    let (code, _, stderr) = run(&mut magnumd(&[
        "all",
        "--listen",
        "0.0.0.0:0",
        "--state-dir",
        state,
    ]));
    assert_ne!(code, 0);
    assert!(
        stderr.contains("refusing to serve auth.strategy = \"noauth\" on 0.0.0.0:0"),
        "{stderr}"
    );
    assert!(stderr.contains("--allow-insecure-noauth"), "{stderr}");

    let (mut child, address) = start_all(&[
        "all",
        "--listen",
        "0.0.0.0:0",
        "--allow-insecure-noauth",
        "--state-dir",
        state,
    ]);
    let port = address.rsplit(':').next().unwrap();
    let (status, _) = http("GET", &format!("127.0.0.1:{port}"), "/v1", None);
    assert_eq!(status, 200);
    assert_eq!(terminate(&mut child), 0);
}

#[test]
fn db_upgrade_then_api_and_state_survives_restarts() {
    let directory = tempfile::tempdir().unwrap();
    let state = directory.path().join("state");
    let state_arg = state.to_str().unwrap();

    let (code, _, stderr) = run(&mut magnumd(&[
        "api",
        "--listen",
        "127.0.0.1:0",
        "--state-dir",
        state_arg,
    ]));
    assert_ne!(code, 0);
    assert!(
        stderr.contains("run `magnumd db upgrade` first"),
        "{stderr}"
    );

    let (code, stdout, stderr) = run(&mut magnumd(&["db", "upgrade", "--state-dir", state_arg]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("applied migration 1: "), "{stdout}");
    assert!(state.join("magnum.sqlite").exists());
    let (_, stdout, _) = run(&mut magnumd(&["db", "upgrade", "--state-dir", state_arg]));
    assert_eq!(stdout, "database schema is current\n");
    let (_, stdout, _) = run(&mut magnumd(&["db", "version", "--state-dir", state_arg]));
    assert!(stdout.contains("1  applied"), "{stdout}");

    let (mut child, address) =
        start_all(&["all", "--listen", "127.0.0.1:0", "--state-dir", state_arg]);
    let (status, body) = http(
        "POST",
        &address,
        "/v1/clustertemplates",
        Some(
            r#"{"name": "kept", "coe": "swarm-mode", "image_id": "local-node", "external_network_id": "local"}"#,
        ),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(terminate(&mut child), 0, "SIGTERM stops magnumd cleanly");

    let (mut child, address) =
        start_all(&["all", "--listen", "127.0.0.1:0", "--state-dir", state_arg]);
    let (status, body) = http("GET", &address, "/v1/clustertemplates/kept", None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(terminate(&mut child), 0);

    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the state directory is private");
}

#[test]
fn ca_keys_are_guarded_by_a_private_key_file() {
    use std::os::unix::fs::PermissionsExt;
    let directory = tempfile::tempdir().unwrap();
    let state = directory.path().join("state");
    let state_arg = state.to_str().unwrap();
    // First start of the embedded default: the key file is made, owner-only.
    let (mut child, _) = start_all(&["all", "--listen", "127.0.0.1:0", "--state-dir", state_arg]);
    assert_eq!(terminate(&mut child), 0);
    let key = state.join("certificate-key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Readable by others: refused, naming the file and the fix.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, _, stderr) = run(&mut magnumd(&[
        "all",
        "--listen",
        "127.0.0.1:0",
        "--state-dir",
        state_arg,
    ]));
    assert_ne!(code, 0);
    assert!(stderr.contains("must be mode 0600"), "{stderr}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    // Scaled-out processes must share one key, so it must be configured.
    let (code, _, stderr) = run(&mut magnumd(&[
        "api",
        "--listen",
        "127.0.0.1:0",
        "--state-dir",
        state_arg,
    ]));
    assert_ne!(code, 0);
    assert!(
        stderr.contains("certificates.key_file must be set"),
        "{stderr}"
    );
}

#[test]
fn without_dockerd_the_local_driver_says_so_at_start_and_on_validation() {
    let directory = tempfile::tempdir().unwrap();
    let state = directory.path().join("state");
    // A PATH without /usr/sbin: no dockerd, no ip.
    let mut command = magnumd(&[
        "all",
        "--listen",
        "127.0.0.1:0",
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    command
        .env("PATH", "/usr/bin:/bin")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
    let address = line
        .trim()
        .strip_prefix("magnumd listening on http://")
        .and_then(|rest| rest.strip_suffix("/v1"))
        .unwrap()
        .to_owned();
    let (status, body) = http(
        "POST",
        &address,
        "/v1/clustertemplates",
        Some(
            r#"{"name": "t", "coe": "swarm-mode", "image_id": "local-node", "external_network_id": "local"}"#,
        ),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("it needs root and dockerd"), "{body}");
    assert!(body.contains("missing: dockerd"), "{body}");
    terminate(&mut child);
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains("The local driver cannot build clusters on this host"),
        "{stderr}"
    );
}

/// `magnumd all` for the local driver, with a short lease so that a restart takes over fast.
fn start_local(state: &str) -> (Child, String) {
    start_local_in(state, "10.94.0.0/16", &[("MAGNUM_CONDUCTOR__LEASE", "2")])
}

/// `magnumd all` with the local driver cutting clusters from `pool`.
fn start_local_in(state: &str, pool: &str, environment: &[(&str, &str)]) -> (Child, String) {
    let mut command = magnumd(&["all", "--listen", "127.0.0.1:0", "--state-dir", state]);
    command
        .env("MAGNUM_DRIVERS__LOCAL__NETWORK_POOL", pool)
        .envs(environment.iter().copied());
    // A campaign keeps what every magnumd it started logged, beside its own log.
    let stderr = std::env::var("MAGNUM_CHAOS_LOG_DIR")
        .ok()
        .and_then(|directory| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(std::path::Path::new(&directory).join("magnumd.log"))
                .ok()
        })
        .map_or_else(Stdio::null, Stdio::from);
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = BufReader::new(stdout).lines().next().unwrap().unwrap();
    let address = line
        .strip_prefix("magnumd listening on http://")
        .and_then(|rest| rest.strip_suffix("/v1"))
        .unwrap()
        .to_owned();
    (child, address)
}

fn cluster_status(address: &str, uuid: &str) -> (u16, String) {
    http("GET", address, &format!("/v1/clusters/{uuid}"), None)
}

/// The cluster's nodegroups once none is changing (none when the cluster is gone).
fn wait_for_nodegroups(address: &str, uuid: &str) -> Vec<serde_json::Value> {
    for _ in 0..600 {
        let (status, body) = http_latest(
            "GET",
            address,
            &format!("/v1/clusters/{uuid}/nodegroups"),
            None,
        );
        if status == 404 {
            return Vec::new();
        }
        assert_eq!(status, 200, "the nodegroups of {uuid}: {body}");
        if !body.contains("_IN_PROGRESS\"") {
            let list: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            return list["nodegroups"].as_array().cloned().unwrap_or_default();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("the nodegroups of {uuid} never came to rest");
}

/// A client key and a certificate for it signed by `cluster`'s CA through the API, with that
/// CA, as Docker reads them (key.pem, cert.pem, ca.pem in `directory`).
fn sign_client(address: &str, cluster: &str, directory: &std::path::Path) -> bool {
    let (ok, _) = crate::local_driver::run(
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
            "/CN=campaign",
        ],
        directory,
    );
    let Ok(csr) = std::fs::read_to_string(directory.join("client.csr")) else {
        return false;
    };
    let request = serde_json::json!({"cluster_uuid": cluster, "csr": csr}).to_string();
    let (status, body) = http("POST", address, "/v1/certificates", Some(&request));
    let signed: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let (ca_status, ca_body) = http("GET", address, &format!("/v1/certificates/{cluster}"), None);
    let ca: serde_json::Value = serde_json::from_str(&ca_body).unwrap_or_default();
    match (signed["pem"].as_str(), ca["pem"].as_str()) {
        (Some(certificate), Some(ca)) if ok && status == 201 && ca_status == 200 => {
            std::fs::write(directory.join("cert.pem"), certificate).is_ok()
                && std::fs::write(directory.join("ca.pem"), ca).is_ok()
        }
        _ => false,
    }
}

/// Whether the Docker API at `address` answers a TLS client with the files in `directory`.
/// A node healed a moment ago may still be starting its dockerd: a few tries over 20 s.
fn docker_answers(directory: &std::path::Path, address: &str) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..10 {
        let (ok, output) = crate::local_driver::docker(
            directory,
            address,
            &["version", "--format", "{{.Server.Version}}"],
        );
        if ok {
            return Ok(());
        }
        last = output;
        std::thread::sleep(Duration::from_secs(2));
    }
    Err(last)
}

fn wait_for(address: &str, uuid: &str, done: impl Fn(u16, &str) -> bool) -> String {
    for _ in 0..600 {
        let (status, body) = cluster_status(address, uuid);
        if done(status, &body) {
            return body;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!(
        "cluster {uuid} did not get there: {:?}",
        cluster_status(address, uuid)
    );
}

#[test]
fn a_local_cluster_survives_magnumd_killed_mid_create_and_deletes_cleanly() {
    let directory = tempfile::tempdir().unwrap();
    let state = directory.path().join("state");
    let state_arg = state.to_str().unwrap();
    let (mut child, address) = start_local(state_arg);
    let (status, body) = http(
        "POST",
        &address,
        "/v1/clustertemplates",
        Some(
            r#"{"name": "t", "coe": "swarm-mode", "image_id": "local-node", "external_network_id": "local"}"#,
        ),
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = http(
        "POST",
        &address,
        "/v1/clusters",
        Some(r#"{"cluster_template_id": "t", "name": "k", "node_count": 2}"#),
    );
    assert_eq!(status, 202, "{body}");
    let uuid = body.split('"').nth(3).unwrap().to_owned();
    // Killed while the first nodes start.
    std::thread::sleep(Duration::from_millis(1500));
    child.kill().unwrap();
    child.wait().unwrap();
    let (mut child, address) = start_local(state_arg);
    let body = wait_for(&address, &uuid, |_, body| {
        !body.contains("CREATE_IN_PROGRESS")
    });
    assert!(body.contains("\"status\": \"CREATE_COMPLETE\""), "{body}");
    let addresses = body.matches("10.94.").count();
    assert!(
        addresses >= 4,
        "api address, one master and two workers: {body}"
    );
    // No node was duplicated: exactly three node namespaces for this cluster.
    let short: String = uuid.replace('-', "")[..8].to_owned();
    let namespaces = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let count = String::from_utf8_lossy(&namespaces.stdout)
        .lines()
        .filter(|line| line.contains(&short))
        .count();
    assert_eq!(count, 3);
    let (status, _) = http("DELETE", &address, &format!("/v1/clusters/{uuid}"), None);
    assert_eq!(status, 204);
    wait_for(&address, &uuid, |status, _| status == 404);
    let namespaces = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&namespaces.stdout).contains(&short));
    assert_eq!(terminate(&mut child), 0);
}

/// A node's first process (`unshare`) is running: not gone, and not a zombie (whose command
/// line is empty).
fn node_running(pid: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|line| line.starts_with(b"unshare"))
}

/// A delete cut short by a SIGKILL of magnumd is finished by the next magnumd, leaving nothing
/// of the cluster on the host. Two moments: just after the driver marked the cluster for
/// deletion, and once every node of it is dead and its namespaces gone (links, cgroups,
/// files, claims and records may be left). The test holds the host's claims lock meanwhile, which the
/// delete needs for its last steps, so that the kill always lands before the delete's end
/// however the machine schedules it.
#[test]
fn a_local_delete_killed_midway_is_finished_by_the_next_magnumd() {
    let directory = tempfile::tempdir().unwrap();
    let state = directory.path().join("state");
    let state_arg = state.to_str().unwrap();
    let (mut child, mut address) = start_local(state_arg);
    let (status, body) = http(
        "POST",
        &address,
        "/v1/clustertemplates",
        Some(
            r#"{"name": "t", "coe": "swarm-mode", "image_id": "local-node", "external_network_id": "local"}"#,
        ),
    );
    assert_eq!(status, 201, "{body}");
    let mut clusters = Vec::new();
    for name in ["marked", "nodes-dead"] {
        let (status, body) = http(
            "POST",
            &address,
            "/v1/clusters",
            Some(&format!(
                r#"{{"cluster_template_id": "t", "name": "{name}", "node_count": 2}}"#
            )),
        );
        assert_eq!(status, 202, "{body}");
        let uuid = body.split('"').nth(3).unwrap().to_owned();
        // One after the other: two first creates on a fresh state directory race to build
        // the node image.
        let body = wait_for(&address, &uuid, |_, body| {
            !body.contains("CREATE_IN_PROGRESS")
        });
        assert!(body.contains("\"status\": \"CREATE_COMPLETE\""), "{body}");
        clusters.push(uuid);
    }
    for (moment, uuid) in ["marked", "nodes dead"].into_iter().zip(&clusters) {
        let records = state.join("local-driver/clusters").join(uuid);
        let pids: Vec<String> = (1..=3)
            .map(|node| std::fs::read_to_string(records.join(format!("n{node}/node.pid"))).unwrap())
            .map(|pid| pid.trim().to_owned())
            .collect();
        assert!(
            pids.iter().all(|pid| node_running(pid)),
            "{moment}: {pids:?}"
        );
        let short: String = uuid.replace('-', "")[..8].to_owned();
        let claims_lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open("/var/lib/magnum-local/claims/.lock")
            .unwrap();
        claims_lock.lock().unwrap();
        let (status, body) = http("DELETE", &address, &format!("/v1/clusters/{uuid}"), None);
        assert_eq!(status, 204, "{body}");
        let started = std::time::Instant::now();
        loop {
            let reached = match moment {
                "marked" => records.join("deleting").exists(),
                _ => {
                    let namespaces = Command::new("ip").args(["netns", "list"]).output().unwrap();
                    !pids.iter().any(|pid| node_running(pid))
                        && !String::from_utf8_lossy(&namespaces.stdout).contains(&short)
                }
            };
            if reached {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{moment} never came: {:?}",
                cluster_status(&address, uuid)
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        claims_lock.unlock().unwrap();
        // Killed in the middle: the records were still there.
        assert!(records.join("cluster.json").exists(), "{moment}");
        (child, address) = start_local(state_arg);
        wait_for(&address, uuid, |status, _| status == 404);
        assert_eq!(
            crate::local_driver::leftovers(uuid),
            Vec::<String>::new(),
            "{moment}"
        );
        assert_eq!(
            crate::local_driver::state_leftovers(&state, uuid),
            Vec::<String>::new(),
            "{moment}"
        );
    }
    assert_eq!(terminate(&mut child), 0);
}

#[test]
fn state_files_are_private_and_secrets_stay_out_of_messages() {
    use std::os::unix::fs::PermissionsExt;
    let directory = tempfile::tempdir().unwrap();
    let state = directory.path().join("state");
    let (mut child, address) = start_all(&[
        "all",
        "--listen",
        "127.0.0.1:0",
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    let (status, _) = http("GET", &address, "/v1/clustertemplates", None);
    assert_eq!(status, 200);
    terminate(&mut child);
    let mode = |path: &std::path::Path| {
        std::fs::metadata(path)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join("magnum.sqlite")), 0o600);
    // A bad broker URL is named without its password.
    let (code, _, stderr) = run(magnumd(&["all", "--state-dir", state.to_str().unwrap()])
        .env("MAGNUM_NOTIFICATIONS__SINK", "rabbitmq")
        .env(
            "MAGNUM_NOTIFICATIONS__TRANSPORT_URL",
            "amqp://magnum:s3cret-pass@broker:port/",
        ));
    assert_ne!(code, 0);
    assert!(stderr.contains("notifications.transport_url"), "{stderr}");
    assert!(!stderr.contains("s3cret-pass"), "{stderr}");
}

/// The chaos campaign of issue 13 against the real local driver: random creates, resizes,
/// nodegroup additions and removals, CA rotations and deletes, SIGKILLs of magnumd and of node
/// sandboxes at random moments, and after every trial the host must match the API: every
/// cluster at rest, one running sandbox per node it reports (auto-healing brings killed nodes
/// back), its nodes serving TLS under the CA the API returns (unchanged unless rotated; a
/// client certificate of a rotated-away CA refused), and nothing at all left of a deleted one.
/// `MAGNUM_LOCAL_CHAOS_TRIALS` sets the budget (4 in the suite), `MAGNUM_LOCAL_CHAOS_SEED`
/// replays a run.
#[test]
fn a_local_campaign_of_kills_leaves_the_host_as_the_api_says() {
    let trials: u64 = std::env::var("MAGNUM_LOCAL_CHAOS_TRIALS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(4);
    let seed: u64 = std::env::var("MAGNUM_LOCAL_CHAOS_SEED")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| (u64::from(std::process::id()) * 2_654_435_761) | 1);
    let mut state_of_random = seed;
    let mut random = move |bound: u64| {
        // A 64-bit linear congruential generator (Knuth's MMIX constants): reproducible.
        state_of_random = state_of_random
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state_of_random >> 33) % bound.max(1)
    };
    let started = std::time::Instant::now();
    let directory = tempfile::tempdir().unwrap();
    let state = directory.path().join("state");
    let state_arg = state.to_str().unwrap().to_owned();
    let start = |state: &str| start_local_in(state, "10.97.0.0/16", &[]);
    let (mut child, mut address) = start(&state_arg);
    let (status, body) = http(
        "POST",
        &address,
        "/v1/clustertemplates",
        Some(
            r#"{"name": "t", "coe": "swarm-mode", "image_id": "local-node", "external_network_id": "local", "labels": {"auto_healing_enabled": "true"}}"#,
        ),
    );
    assert_eq!(status, 201, "{body}");
    let mut live: Vec<String> = Vec::new();
    let mut deleted: Vec<String> = Vec::new();
    // What the API must keep: each cluster's CA (until a rotation), its extra nodegroup, and a
    // client certificate of the CA a rotation replaces, which its nodes must refuse afterwards.
    let mut cas: std::collections::HashMap<String, String> = Default::default();
    let mut extra_groups: std::collections::HashSet<String> = Default::default();
    let mut stale_clients: std::collections::HashMap<String, tempfile::TempDir> =
        Default::default();
    let (mut kills, mut node_kills, mut rotations, mut violations) = (0, 0, 0, Vec::new());
    let mut tls_checks = 0;
    // Changes that failed with a reason (allowed, but counted and published), and each
    // cluster's last failure, so that one is counted once however many trials it stays.
    let mut failed_changes = 0;
    let mut failures: std::collections::HashMap<String, String> = Default::default();
    // Every step and every violation goes to the log file as it happens: a run stopped early
    // (or one that hangs) still tells what it saw.
    let log_file = std::env::var("MAGNUM_CHAOS_LOG_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir())
        .join(format!("magnum-local-chaos-{seed}.log"));
    let _ = std::fs::write(&log_file, format!("seed {seed}\n"));
    let append = {
        let log_file = log_file.clone();
        move |line: &str| {
            use std::io::Write;
            if let Ok(mut file) = std::fs::OpenOptions::new().append(true).open(&log_file) {
                let _ = writeln!(file, "{line}");
            }
        }
    };
    let record_step = {
        let append = append.clone();
        move |log: &mut Vec<String>, line: String| {
            append(&line);
            log.push(line);
        }
    };
    let record = move |violations: &mut Vec<String>, line: String| {
        eprintln!("local chaos violation: {line}");
        append(&format!("VIOLATION {line}"));
        violations.push(line);
    };
    let mut log = vec![format!("seed {seed}")];
    // A helper's panic must not leave sandboxes behind: the clusters are deleted through the
    // API before the state directory goes.
    let campaign = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for trial in 0..trials {
            let action = match live.len() {
                0 | 1 => 0,
                // Three clusters of up to five sandboxes each are what this machine holds well.
                2 => random(5),
                _ => 1 + random(4),
            };
            let description = match action {
                0 => {
                    let (status, body) = http(
                        "POST",
                        &address,
                        "/v1/clusters",
                        Some(r#"{"cluster_template_id": "t", "node_count": 1}"#),
                    );
                    if status == 202 {
                        live.push(body.split('"').nth(3).unwrap().to_owned());
                    }
                    format!("create -> {status}")
                }
                1 => {
                    let uuid = live[random(live.len() as u64) as usize].clone();
                    let workers = 1 + random(2);
                    let (status, _) = http(
                        "PATCH",
                        &address,
                        &format!("/v1/clusters/{uuid}"),
                        Some(&format!(
                            r#"[{{"op": "replace", "path": "/node_count", "value": {workers}}}]"#
                        )),
                    );
                    format!("resize {uuid} to {workers} -> {status}")
                }
                2 => {
                    let index = random(live.len() as u64) as usize;
                    let uuid = live[index].clone();
                    let (status, _) =
                        http("DELETE", &address, &format!("/v1/clusters/{uuid}"), None);
                    if status == 204 {
                        deleted.push(live.remove(index));
                        cas.remove(&uuid);
                        stale_clients.remove(&uuid);
                    }
                    format!("delete {uuid} -> {status}")
                }
                3 => {
                    let uuid = live[random(live.len() as u64) as usize].clone();
                    let before = tempfile::tempdir().unwrap();
                    let signed = sign_client(&address, &uuid, before.path());
                    let (status, _) =
                        http("PATCH", &address, &format!("/v1/certificates/{uuid}"), None);
                    if status == 202 && signed {
                        rotations += 1;
                        cas.remove(&uuid);
                        stale_clients.insert(uuid.clone(), before);
                    }
                    format!("rotate the CA of {uuid} -> {status}")
                }
                _ => {
                    let uuid = live[random(live.len() as u64) as usize].clone();
                    if extra_groups.contains(&uuid) {
                        let (status, _) = http_latest(
                            "DELETE",
                            &address,
                            &format!("/v1/clusters/{uuid}/nodegroups/extra"),
                            None,
                        );
                        if status == 204 {
                            extra_groups.remove(&uuid);
                        }
                        format!("delete nodegroup extra of {uuid} -> {status}")
                    } else {
                        let (status, _) = http_latest(
                            "POST",
                            &address,
                            &format!("/v1/clusters/{uuid}/nodegroups"),
                            Some(r#"{"name": "extra", "node_count": 1}"#),
                        );
                        if status == 202 {
                            extra_groups.insert(uuid.clone());
                        }
                        format!("add nodegroup extra to {uuid} -> {status}")
                    }
                }
            };
            record_step(&mut log, format!("trial {trial}: {description}"));
            // A long run shows where it is, so that one stopped early still tells something.
            if trial > 0 && trial % 50 == 0 {
                eprintln!(
                    "local chaos: {trial} trials, {kills} kills, {node_kills} node kills, {rotations} CA rotations, {} deleted, {failed_changes} failed changes, {} violations so far, {} s",
                    deleted.len(),
                    violations.len(),
                    started.elapsed().as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(random(2500)));
            if random(100) < 60 {
                kills += 1;
                child.kill().unwrap();
                child.wait().unwrap();
                (child, address) = start(&state_arg);
                record_step(
                    &mut log,
                    format!("trial {trial}: magnumd killed and restarted"),
                );
            }
            // A node of a cluster dies too, sometimes.
            if random(100) < 30 && !live.is_empty() {
                let uuid = &live[random(live.len() as u64) as usize];
                let pid_file = state
                    .join("local-driver/clusters")
                    .join(uuid)
                    .join("n1/node.pid");
                if let Ok(pid) = std::fs::read_to_string(&pid_file) {
                    node_kills += 1;
                    let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
                    record_step(&mut log, format!("trial {trial}: node n1 of {uuid} killed"));
                }
            }
            for uuid in live.clone() {
                let body = wait_for(&address, &uuid, |status, body| {
                    status != 200 || !body.contains("_IN_PROGRESS\"")
                });
                let groups = wait_for_nodegroups(&address, &uuid);
                let cluster: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                let status = cluster["status"].as_str().unwrap_or_default();
                if status.ends_with("FAILED") {
                    let reason = cluster["status_reason"].as_str().unwrap_or_default();
                    if reason.is_empty() {
                        record(
                            &mut violations,
                            format!("trial {trial}: {uuid} {status} without a reason"),
                        );
                    }
                    // A change may fail, with its reason: counted and logged, each once.
                    let failure = format!("{status} {reason} {}", cluster["updated_at"]);
                    if failures.get(&uuid) != Some(&failure) {
                        failed_changes += 1;
                        record_step(
                            &mut log,
                            format!("trial {trial}: {uuid} {status}: {reason}"),
                        );
                        failures.insert(uuid.clone(), failure);
                    }
                }
                // A nodegroup whose accepted deletion failed stays, saying why (as upstream's
                // DELETE_FAILED does): the tenant deletes it again. Gone without a trace, or
                // still there without a failure, is a lost request.
                let failed_deletion = groups.iter().find(|group| {
                    group["name"] == "extra"
                        && group["status"] == "DELETE_FAILED"
                        && !group["status_reason"]
                            .as_str()
                            .unwrap_or_default()
                            .is_empty()
                });
                if let Some(group) = failed_deletion {
                    if extra_groups.insert(uuid.clone()) {
                        failed_changes += 1;
                        record_step(
                            &mut log,
                            format!(
                                "trial {trial}: {uuid} deletion of nodegroup extra failed: {}",
                                group["status_reason"]
                            ),
                        );
                    }
                }
                if status.ends_with("FAILED") {
                    continue;
                }
                if !status.ends_with("COMPLETE") {
                    record(
                        &mut violations,
                        format!("trial {trial}: {uuid} is {status:?}"),
                    );
                    continue;
                }
                // The extra nodegroup is there exactly when its creation was accepted and its
                // deletion was not.
                let has_extra = groups.iter().any(|group| group["name"] == "extra");
                if has_extra != extra_groups.contains(&uuid) {
                    record(
                        &mut violations,
                        format!(
                        "trial {trial}: {uuid} nodegroup extra present: {has_extra}, expected {} (extra: {}; the cluster's last reason: {})",
                        extra_groups.contains(&uuid),
                        groups
                            .iter()
                            .find(|group| group["name"] == "extra")
                            .map(|group| format!("{} {}", group["status"], group["status_reason"]))
                            .unwrap_or_else(|| "absent".to_owned()),
                        cluster["status_reason"]
                    ),
                    );
                }
                // One running sandbox per node the API reports, once healing had its chance.
                let wanted: i64 = groups
                    .iter()
                    .map(|group| group["node_count"].as_i64().unwrap_or(0))
                    .sum();
                let nodes_dir = state.join("local-driver/clusters").join(&uuid);
                let running = || {
                    std::fs::read_dir(&nodes_dir)
                        .into_iter()
                        .flatten()
                        .flatten()
                        .filter(|entry| {
                            std::fs::read_to_string(entry.path().join("node.pid"))
                                .ok()
                                .and_then(|pid| pid.trim().parse::<u32>().ok())
                                .is_some_and(|pid| {
                                    std::fs::read(format!("/proc/{pid}/cmdline"))
                                        .is_ok_and(|line| line.starts_with(b"unshare"))
                                })
                        })
                        .count() as i64
                };
                let mut seen = running();
                for _ in 0..150 {
                    if seen == wanted {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                    seen = running();
                }
                if seen != wanted {
                    record(
                        &mut violations,
                        format!(
                            "trial {trial}: {uuid} reports {wanted} nodes, {seen} sandboxes run"
                        ),
                    );
                }
                // The CA is intact: the same as before unless rotated, and the nodes serve TLS
                // under it to a client certificate the API signs now.
                let (status, body) =
                    http("GET", &address, &format!("/v1/certificates/{uuid}"), None);
                let ca: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                let Some(pem) = ca["pem"].as_str().filter(|_| status == 200) else {
                    record(
                        &mut violations,
                        format!("trial {trial}: {uuid} CA unreadable: {status} {body}"),
                    );
                    continue;
                };
                match cas.get(&uuid) {
                    Some(known) if known != pem => record(
                        &mut violations,
                        format!("trial {trial}: {uuid} CA changed without rotation"),
                    ),
                    Some(_) => {}
                    None => {
                        cas.insert(uuid.clone(), pem.to_owned());
                    }
                }
                let api_address = cluster["api_address"].as_str().unwrap_or_default();
                let client = tempfile::tempdir().unwrap();
                tls_checks += 1;
                if !sign_client(&address, &uuid, client.path()) {
                    record(
                        &mut violations,
                        format!("trial {trial}: {uuid} signs no client certificate"),
                    );
                    continue;
                }
                if let Err(output) = docker_answers(client.path(), api_address) {
                    record(
                        &mut violations,
                        format!(
                        "trial {trial}: {uuid} at {api_address} refuses a current client: {output}"
                    ),
                    );
                }
                let rotated_away = stale_clients.get(&uuid).is_some_and(|stale| {
                    std::fs::read_to_string(stale.path().join("ca.pem")).is_ok_and(|old| old != pem)
                });
                if rotated_away {
                    let stale = stale_clients.remove(&uuid).unwrap();
                    tls_checks += 1;
                    let (accepted, _) = crate::local_driver::docker(
                        stale.path(),
                        api_address,
                        &["version", "--format", "{{.Server.Version}}"],
                    );
                    if accepted {
                        record(
                            &mut violations,
                            format!(
                            "trial {trial}: {uuid} still accepts a client of its rotated-away CA"
                        ),
                        );
                    }
                }
            }
            for uuid in &deleted {
                wait_for(&address, uuid, |status, _| status == 404);
            }
            let host = crate::local_driver::HostView::read();
            for uuid in &deleted {
                let left = host.leftovers(uuid);
                let records = crate::local_driver::state_leftovers(&state, uuid);
                if !left.is_empty() || !records.is_empty() {
                    record(
                        &mut violations,
                        format!("trial {trial}: deleted {uuid} left {left:?} {records:?}"),
                    );
                }
            }
        }
    }));
    if let Err(panic) = campaign {
        for uuid in live.iter().chain(&deleted) {
            http("DELETE", &address, &format!("/v1/clusters/{uuid}"), None);
        }
        for uuid in live.iter().chain(&deleted) {
            wait_for(&address, uuid, |status, _| status == 404);
        }
        let _ = terminate(&mut child);
        std::panic::resume_unwind(panic);
    }
    // Nothing stays behind the campaign.
    for uuid in &live {
        http("DELETE", &address, &format!("/v1/clusters/{uuid}"), None);
    }
    for uuid in &live {
        wait_for(&address, uuid, |status, _| status == 404);
        assert_eq!(crate::local_driver::leftovers(uuid), Vec::<String>::new());
    }
    assert_eq!(terminate(&mut child), 0);
    let summary = format!(
        "local chaos: seed {seed}, {trials} trials, {kills} kills of magnumd, {node_kills} node \
         kills, {rotations} CA rotations, {tls_checks} TLS checks, {} clusters deleted, \
         {failed_changes} changes failed with a reason, {} invariant violations, {} s",
        deleted.len(),
        violations.len(),
        started.elapsed().as_secs()
    );
    println!("{summary}");
    log.extend(violations.iter().cloned());
    assert!(
        violations.is_empty(),
        "{summary}; replay with MAGNUM_LOCAL_CHAOS_SEED={seed} (log: {}):\n{}",
        log_file.display(),
        log.join("\n")
    );
}
