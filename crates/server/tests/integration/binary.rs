//! magnumd as an operator runs it: the process, its flags, configuration and signals.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const MAGNUMD: &str = env!("CARGO_BIN_EXE_magnumd");

fn magnumd(arguments: &[&str]) -> Command {
    let mut command = Command::new(MAGNUMD);
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
    let mut command = magnumd(&["all", "--listen", "127.0.0.1:0", "--state-dir", state]);
    command
        .env("MAGNUM_CONDUCTOR__LEASE", "2")
        .env("MAGNUM_DRIVERS__LOCAL__NETWORK_POOL", "10.94.0.0/16");
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
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
