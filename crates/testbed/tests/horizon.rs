//! OpenStack's dashboard against magnum-rs: real Horizon 27 with the magnum-ui 19 plugin
//! (`scripts/horizon install`: pip, pinned, in the ignored `.venv-horizon`, or the venv
//! `MAGNUM_HORIZON` names) served by Django's development server, driven in headless Debian
//! Chromium (selenium, `tests/fixtures/horizon_magnum_ui.py`), logging in to the real test
//! Keystone (`scripts/keystone`), whose catalog lists — in a region of this test's own —
//! magnumd (`magnumd-testbed`, `auth.strategy = "keystone"`) as `container-infra` and the
//! Glance/Nova/Neutron stand-ins of magnum-test-support that Horizon's forms read.
//!
//! The clusters are built by the scripted driver: Horizon's template form offers Kubernetes
//! only, which the local driver (swarm-mode) does not build; the scripted driver takes the
//! stand-ins' images, flavors, networks and keypairs as its references, so that what a user
//! picks in the forms is what magnumd validates.
//!
//! After each thing done in the browser the test checks through magnum-rs's API that it
//! happened — the template and cluster created with what the forms said, refused input not
//! stored, both gone after their deletion, the quotas the admin panel changed — and keeps
//! screenshots of the pages in `.work/screenshots/horizon-*.png`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use magnum_test_support::catalog::CatalogRegion;
use magnum_test_support::cloud::CloudStandIn;
use magnum_test_support::octavia::password_token;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

/// How long the whole browser flow may take (a cold venv compiles Horizon's assets first).
const FLOW_TIMEOUT: Duration = Duration::from_secs(600);

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Horizon venv: `MAGNUM_HORIZON`, else the repository's `.venv-horizon`.
fn horizon_venv() -> PathBuf {
    let venv = std::env::var_os("MAGNUM_HORIZON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repository().join(".venv-horizon"));
    assert!(
        venv.join("bin/python").exists(),
        "no Horizon venv at {}: run scripts/horizon install (scripts/test does), or set \
         MAGNUM_HORIZON",
        venv.display()
    );
    for program in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        assert!(
            Path::new(program).exists(),
            "{program} is missing: apt-get install chromium chromium-driver (scripts/horizon \
             install does)"
        );
    }
    venv
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}

/// A free loopback port (bound, read, released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The v1 API as a Keystone user sees it.
struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}{path}", self.base),
            )
            .header("X-Auth-Token", &self.token)
            .header("OpenStack-API-Version", "container-infra 1.13");
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body) = self.call("GET", path, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// The items of a list whose `name` is `name`.
    async fn named(&self, collection: &str, name: &str) -> Vec<Value> {
        let listed = self.get(&format!("/v1/{collection}/detail")).await;
        listed[collection]
            .as_array()
            .unwrap()
            .iter()
            .filter(|item| item["name"] == name)
            .cloned()
            .collect()
    }
}

/// `magnumd-testbed all` with Keystone auth and the scripted driver on the stand-ins'
/// references; returns the process and its `/v1` URL.
async fn start_magnumd(fixture: &Value, cloud: &CloudStandIn, scratch: &Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_magnumd-testbed"))
        .args(["all", "--listen", "127.0.0.1:0"])
        .env(
            "MAGNUM_DATABASE__URL",
            format!("sqlite://{}", scratch.join("magnum.sqlite").display()),
        )
        .env("MAGNUM_SERVER__STATE_DIR", scratch.join("state"))
        .env("MAGNUM_AUTH__STRATEGY", "keystone")
        .env(
            "MAGNUM_AUTH__KEYSTONE__AUTH_URL",
            text(&fixture["auth_url"]),
        )
        .env(
            "MAGNUM_AUTH__KEYSTONE__CREDENTIALS_FILE",
            text(&fixture["credentials_file"]),
        )
        .env("MAGNUM_CONDUCTOR__POLL_INTERVAL_MS", "100")
        .env("MAGNUM_LOG__LEVEL", "warn")
        .env(
            "MAGNUM_TESTBED_SCRIPTED_CLOUD",
            cloud.scripted_cloud().to_json().to_string(),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("magnumd-testbed starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("magnumd-testbed says where it listens within 30 s")
        .unwrap()
        .unwrap_or_default();
    let url = line
        .strip_prefix("magnumd listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    (child, url)
}

/// Horizon on a free port (`manage.py runserver`, as `django-admin`), once its login page
/// answers; its log goes to `log`.
async fn start_horizon(venv: &Path, keystone: &str, state: &Path, log: &Path) -> (Child, String) {
    let port = free_port();
    let log_file = std::fs::File::create(log).unwrap();
    let child = Command::new(venv.join("bin/python"))
        .args(["-m", "django", "runserver", "--noreload"])
        .arg(format!("127.0.0.1:{port}"))
        .env("DJANGO_SETTINGS_MODULE", "openstack_dashboard.settings")
        .env("MAGNUM_HORIZON_KEYSTONE_URL", keystone)
        .env("MAGNUM_HORIZON_STATE_DIR", state)
        .env("PYTHONWARNINGS", "ignore")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .kill_on_drop(true)
        .spawn()
        .expect("Horizon starts");
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let answered = http
            .get(format!("{url}/auth/login/"))
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .map(|response| response.status().is_success())
            .unwrap_or(false);
        if answered {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Horizon does not answer within 120 s: {}",
            tail(log)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    (child, url)
}

/// The last lines of Horizon's log but its static files, for a failure's message.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .filter(|line| !line.contains("\"GET /static/"))
        .collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// What the test set up, for the checks of each step.
struct World {
    alpha: Api,
    beta: Api,
    admin: Api,
    alpha_project: String,
    beta_project: String,
    external_network_id: String,
    names: Value,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn horizon_magnum_ui_lists_creates_and_deletes_templates_clusters_and_quotas() {
    let venv = horizon_venv();
    let fixture = magnum_test_support::keystone_fixture();
    let auth_url = text(&fixture["auth_url"]);
    let admin = &fixture["admin"];
    let (admin_user, admin_password, admin_project) = (
        text(&admin["user"]),
        text(&admin["password"]),
        text(&admin["project"]),
    );
    let login = (
        admin_user.as_str(),
        admin_password.as_str(),
        admin_project.as_str(),
    );
    let alpha_user = &fixture["users"]["alpha-member"];
    let cloud = CloudStandIn::start(&auth_url, login).await.unwrap();
    cloud.seed_for_dashboards(
        (&text(&alpha_user["user_id"]), "alpha"),
        &text(&alpha_user["project_id"]),
        &text(&admin["project_id"]),
    );
    let mut region = CatalogRegion::create(&auth_url, login, "horizon")
        .await
        .unwrap();
    // Whatever happens below, the region goes again (then the failure is reported).
    let outcome = {
        let flow = run(&venv, &fixture, &cloud, &mut region);
        tokio::time::timeout(FLOW_TIMEOUT, flow).await
    };
    let removed = region.remove().await;
    match outcome {
        Err(_) => panic!("the Horizon flow took more than {FLOW_TIMEOUT:?}"),
        Ok(Err(failure)) => panic!("{failure}"),
        Ok(Ok(())) => {}
    }
    removed.unwrap();
}

/// The flow; a failed check is an `Err` so that the caller can clean up first.
async fn run(
    venv: &Path,
    fixture: &Value,
    cloud: &CloudStandIn,
    region: &mut CatalogRegion,
) -> Result<(), String> {
    for (service_type, url) in cloud.endpoints() {
        region.register(service_type, &url).await?;
    }
    let scratch = tempfile::tempdir().unwrap();
    let (mut magnumd, magnum_url) = start_magnumd(fixture, cloud, scratch.path()).await;
    region.register("container-infra", &magnum_url).await?;
    let auth_url = text(&fixture["auth_url"]);
    let http = reqwest::Client::new();
    let user = |name: &str| fixture["users"][name].clone();
    let token = |user: String, password: String, project: String| {
        let (http, auth_url) = (http.clone(), auth_url.clone());
        async move { password_token(&http, &auth_url, &user, &password, &project).await }
    };
    let alpha = user("alpha-member");
    let base = magnum_url.trim_end_matches("/v1").to_owned();
    let world = World {
        alpha: Api {
            http: http.clone(),
            base: base.clone(),
            token: token(
                "alpha-member".into(),
                text(&alpha["password"]),
                text(&alpha["project"]),
            )
            .await?,
        },
        beta: Api {
            http: http.clone(),
            base: base.clone(),
            token: token(
                "beta-member".into(),
                text(&user("beta-member")["password"]),
                text(&user("beta-member")["project"]),
            )
            .await?,
        },
        admin: Api {
            http: http.clone(),
            base,
            token: token(
                text(&fixture["admin"]["user"]),
                text(&fixture["admin"]["password"]),
                text(&fixture["admin"]["project"]),
            )
            .await?,
        },
        alpha_project: text(&alpha["project_id"]),
        beta_project: text(&user("beta-member")["project_id"]),
        external_network_id: cloud.scripted_cloud().external_networks[0].0.clone(),
        names: json!({
            "api_template": "api-template", "api_cluster": "api-cluster",
            "other_template": "beta-template", "other_cluster": "beta-cluster",
            "template": "horizon-template",
            "bad_template": "horizon-bad-dns", "cluster": "horizon-cluster",
            "over_quota_cluster": "horizon-over-quota",
        }),
    };
    // What the panels are to list: a template made through the API, and a quota of one
    // cluster for the project (so that a second cluster is refused).
    let (status, body) = world
        .alpha
        .call(
            "POST",
            "/v1/clustertemplates",
            Some(json!({"name": "api-template", "coe": "kubernetes",
                        "image_id": "fedora-coreos-40", "external_network_id": "public",
                        "flavor_id": "m1.small", "master_flavor_id": "m1.small",
                        "network_driver": "calico"})),
        )
        .await;
    check(
        status == 201,
        format!("the API's template: {status} {body}"),
    )?;
    let (status, body) = world
        .admin
        .call(
            "POST",
            "/v1/quotas",
            Some(
                json!({"project_id": world.alpha_project, "resource": "Cluster",
                        "hard_limit": 1}),
            ),
        )
        .await;
    check(status == 201, format!("the quota: {status} {body}"))?;

    let horizon_state = repository().join(".work/horizon");
    std::fs::create_dir_all(&horizon_state).unwrap();
    let log = scratch.path().join("horizon.log");
    let (mut horizon, horizon_url) = start_horizon(venv, &auth_url, &horizon_state, &log).await;
    let screenshots = repository().join(".work/screenshots");
    std::fs::create_dir_all(&screenshots).unwrap();
    for old in std::fs::read_dir(&screenshots).unwrap().flatten() {
        if old.file_name().to_string_lossy().starts_with("horizon-") {
            let _ = std::fs::remove_file(old.path());
        }
    }
    let config = json!({
        "horizon": horizon_url, "region": region.region, "screenshots": screenshots,
        "user": {"name": "alpha-member", "password": text(&alpha["password"])},
        "other_user": {"name": "beta-member",
                       "password": text(&user("beta-member")["password"])},
        "admin": {"name": text(&fixture["admin"]["user"]),
                  "password": text(&fixture["admin"]["password"])},
        "names": world.names, "image": "fedora-coreos-40", "flavor": "m1.small",
        "keypair": "alpha-key", "external_network_id": world.external_network_id,
        "availability_zone": "nova", "quota_project_id": world.alpha_project,
        "new_quota_project_id": world.beta_project,
    });
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/horizon_magnum_ui.py");
    let mut browser = Command::new(venv.join("bin/python"))
        .arg(script)
        .arg(config.to_string())
        .env("PYTHONWARNINGS", "ignore")
        // selenium uses the given chromedriver; it must not look for one on the network.
        .env("SE_OFFLINE", "true")
        // A group of its own, with chromedriver and chromium, all killed when the flow ends.
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the browser flow starts");
    let _group = ProcessGroup(browser.id().expect("the flow's process id"));
    let mut stdin = browser.stdin.take().unwrap();
    let mut lines = BufReader::new(browser.stdout.take().unwrap()).lines();
    let mut stderr = browser.stderr.take().unwrap();
    let errors = tokio::spawn(async move {
        let mut text = String::new();
        let _ = tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut text).await;
        text
    });
    let mut steps = Vec::new();
    let mut state = Progress::default();
    let started = Instant::now();
    let failure = loop {
        let line = match lines.next_line().await {
            Ok(Some(line)) => line,
            _ => break None,
        };
        let Some(rest) = line.strip_prefix("STEP ") else {
            eprintln!("horizon flow: {line}");
            continue;
        };
        let (name, details) = rest.split_once(' ').unwrap_or((rest, "{}"));
        let details: Value = serde_json::from_str(details).unwrap_or(Value::Null);
        eprintln!(
            "horizon flow: {name} after {:.1} s",
            started.elapsed().as_secs_f64()
        );
        steps.push(name.to_owned());
        let answer = match verify(&world, &mut state, name, &details).await {
            Ok(None) => "ok\n".to_owned(),
            Ok(Some(made)) => format!("ok {made}\n"),
            Err(failure) => break Some(format!("after the step {name}: {failure}")),
        };
        if stdin.write_all(answer.as_bytes()).await.is_err() {
            break None;
        }
    };
    drop(stdin);
    let status = browser.wait().await.unwrap();
    let errors = errors.await.unwrap_or_default();
    let outcome = match failure {
        Some(failure) => Err(failure),
        None if !status.success() => Err(format!(
            "the browser flow failed after {steps:?} ({status}; screenshot \
             .work/screenshots/horizon-failure.png):\n{errors}\nHorizon's log:\n{}",
            tail(&log)
        )),
        None => {
            let expected = [
                "logged-in",
                "templates-listed",
                "template-refused",
                "template-created",
                "cluster-created",
                "cluster-listed",
                "cluster-details",
                "cluster-refused",
                "cluster-deleted",
                "template-deleted",
                "other-project-sees-none",
                "quotas-listed",
                "quota-created",
                "quota-updated",
                "quota-deleted",
            ];
            check(
                steps == expected,
                format!("the flow went {steps:?}, not {expected:?}"),
            )
        }
    };
    // The stand-ins answered every request Horizon made, with the user's token.
    let seen = cloud.seen();
    let outcome = outcome.and_then(|()| {
        let unanswered: Vec<_> = seen.iter().filter(|seen| seen.status >= 500).collect();
        check(
            unanswered.is_empty(),
            format!("the stand-ins could not answer {unanswered:?}"),
        )?;
        for wanted in [
            "/image/v2/images",
            "/compute/v2.1/flavors/detail",
            "/compute/v2.1/os-keypairs",
            "/compute/v2.1/os-availability-zone",
            "/network/v2.0/networks",
        ] {
            check(
                seen.iter()
                    .any(|seen| seen.path == wanted && seen.project_id == world.alpha_project),
                format!("Horizon never asked {wanted} as alpha-member"),
            )?;
        }
        Ok(())
    });
    let _ = horizon.kill().await;
    let _ = magnumd.kill().await;
    outcome
}

/// Kills a process group when dropped: the browser flow's Python, chromedriver and chromium,
/// whichever way the flow ended (a timeout drops it half-way).
struct ProcessGroup(u32);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0)])
            .stderr(Stdio::null())
            .status();
    }
}

fn check(holds: bool, failure: String) -> Result<(), String> {
    if holds {
        Ok(())
    } else {
        Err(failure)
    }
}

/// What earlier steps found.
#[derive(Default)]
struct Progress {
    template: Option<String>,
    cluster: Option<String>,
}

/// Checks through the API what the browser just did; returns what it made for the next
/// steps, if anything.
async fn verify(
    world: &World,
    progress: &mut Progress,
    step: &str,
    details: &Value,
) -> Result<Option<Value>, String> {
    check_step(world, progress, step, details).await?;
    if step != "template-deleted" {
        return Ok(None);
    }
    // For the member of another project: a cluster of this project, and a template and a
    // cluster of its own (what it must see: the proof that its lists were loaded).
    let mut made = json!({});
    for (api, template, name, key) in [
        (&world.beta, None, "beta-cluster", "other"),
        (&world.alpha, Some("api-template"), "api-cluster", "cluster"),
    ] {
        let template = match template {
            Some(name) => api.named("clustertemplates", name).await[0]["uuid"].clone(),
            None => {
                let (status, body) = api
                    .call(
                        "POST",
                        "/v1/clustertemplates",
                        Some(json!({"name": "beta-template", "coe": "kubernetes",
                                    "image_id": "fedora-coreos-40",
                                    "external_network_id": "public", "flavor_id": "m1.small",
                                    "master_flavor_id": "m1.small"})),
                    )
                    .await;
                check(status == 201, format!("beta's template: {status} {body}"))?;
                body["uuid"].clone()
            }
        };
        let (status, body) = api
            .call(
                "POST",
                "/v1/clusters",
                Some(json!({"name": name, "node_count": 1, "cluster_template_id": template})),
            )
            .await;
        check(status == 202, format!("{name}: {status} {body}"))?;
        made[key] = body["uuid"].clone();
    }
    Ok(Some(made))
}

async fn check_step(
    world: &World,
    progress: &mut Progress,
    step: &str,
    details: &Value,
) -> Result<(), String> {
    let names = &world.names;
    let rows = || details["rows"].to_string();
    let message = details["message"].as_str().unwrap_or_default().to_owned();
    match step {
        "logged-in" => Ok(()),
        "templates-listed" => {
            let made = world.alpha.named("clustertemplates", "api-template").await;
            let uuid = text(&made[0]["uuid"]);
            check(
                rows().contains(&uuid),
                format!("the list lacks {uuid}: {}", rows()),
            )
        }
        "template-refused" => {
            check(
                message.contains("Unable to create cluster template"),
                format!("Horizon said {message:?}"),
            )?;
            let stored = world
                .alpha
                .named("clustertemplates", &text(&names["bad_template"]))
                .await;
            check(stored.is_empty(), format!("refused but stored: {stored:?}"))
        }
        "template-created" => {
            let made = world
                .alpha
                .named("clustertemplates", &text(&names["template"]))
                .await;
            check(made.len() == 1, format!("templates made: {made:?}"))?;
            let template = &made[0];
            let uuid = text(&template["uuid"]);
            check(
                message.contains(&uuid) && rows().contains(&uuid),
                format!("Horizon said {message:?} and listed {}", rows()),
            )?;
            let expected = json!({
                "coe": "kubernetes", "image_id": "fedora-coreos-40", "flavor_id": "m1.small",
                "master_flavor_id": "m1.small", "keypair_id": "alpha-key",
                "external_network_id": world.external_network_id, "network_driver": "calico",
                "volume_driver": "cinder", "docker_storage_driver": "overlay2",
                "cluster_distro": "fedora-coreos", "driver": "scripted",
                "project_id": world.alpha_project, "public": false, "tls_disabled": false,
                "floating_ip_enabled": true, "master_lb_enabled": false,
            });
            for (key, value) in expected.as_object().unwrap() {
                check(
                    template[key] == *value,
                    format!("the template's {key} is {}, not {value}", template[key]),
                )?;
            }
            progress.template = Some(uuid);
            Ok(())
        }
        "cluster-created" => {
            let made = world
                .alpha
                .named("clusters", &text(&names["cluster"]))
                .await;
            check(made.len() == 1, format!("clusters made: {made:?}"))?;
            let uuid = text(&made[0]["uuid"]);
            check(message.contains(&uuid), format!("Horizon said {message:?}"))?;
            let cluster = world.alpha.get(&format!("/v1/clusters/{uuid}")).await;
            let expected = json!({
                "cluster_template_id": progress.template, "keypair": "alpha-key",
                "master_count": 1, "node_count": 1, "create_timeout": 60,
                "flavor_id": "m1.small", "master_flavor_id": "m1.small",
                "project_id": world.alpha_project, "master_lb_enabled": false,
            });
            for (key, value) in expected.as_object().unwrap() {
                check(
                    cluster[key] == *value,
                    format!("the cluster's {key} is {}, not {value}", cluster[key]),
                )?;
            }
            check(
                cluster["labels"]["availability_zone"] == "nova",
                format!("the cluster's labels: {}", cluster["labels"]),
            )?;
            progress.cluster = Some(uuid);
            Ok(())
        }
        "cluster-listed" => {
            let uuid = progress.cluster.clone().unwrap_or_default();
            let cluster = world.alpha.get(&format!("/v1/clusters/{uuid}")).await;
            check(
                cluster["status"] == "CREATE_COMPLETE",
                format!("the API says {}", cluster["status"]),
            )?;
            let listed = details["rows"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .any(|row| row.contains(&uuid) && row.contains("CREATE_COMPLETE"));
            check(listed, format!("the list shows {}", rows()))
        }
        "cluster-details" => {
            let uuid = progress.cluster.clone().unwrap_or_default();
            let cluster = world.alpha.get(&format!("/v1/clusters/{uuid}")).await;
            let page = details["text"].as_str().unwrap_or_default();
            let address = text(&cluster["api_address"]);
            check(
                page.contains(&uuid) && !address.is_empty() && page.contains(&address),
                format!("the details page lacks {uuid} or {address}: {page}"),
            )
        }
        "cluster-refused" => {
            check(
                message.contains("Unable to create cluster"),
                format!("Horizon said {message:?}"),
            )?;
            let stored = world
                .alpha
                .named("clusters", &text(&names["over_quota_cluster"]))
                .await;
            check(stored.is_empty(), format!("refused but stored: {stored:?}"))
        }
        "cluster-deleted" => {
            let uuid = progress.cluster.clone().unwrap_or_default();
            gone(&world.alpha, &format!("/v1/clusters/{uuid}")).await
        }
        "template-deleted" => {
            let uuid = progress.template.clone().unwrap_or_default();
            gone(&world.alpha, &format!("/v1/clustertemplates/{uuid}")).await
        }
        "other-project-sees-none" => {
            let shown = format!("{} {}", details["templates"], details["clusters"]);
            check(
                shown.contains("beta-template") && shown.contains("beta-cluster"),
                format!("beta-member's own are not listed: {shown}"),
            )?;
            for (collection, name) in [
                ("clustertemplates", "api-template"),
                ("clusters", "api-cluster"),
            ] {
                check(
                    !shown.contains(name),
                    format!("beta-member was shown {name}: {shown}"),
                )?;
                check(
                    world.alpha.named(collection, name).await.len() == 1
                        && world.beta.named(collection, name).await.is_empty(),
                    format!("{name} is not alpha's alone"),
                )?;
            }
            check(
                message.contains("Unable to retrieve"),
                format!("alpha's cluster's page showed beta-member {message:?}"),
            )
        }
        "quotas-listed" => check(
            details["rows"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .any(|row| row.contains(&world.alpha_project) && row.contains(" 1 ")),
            format!("the quotas panel shows {}", rows()),
        ),
        "quota-created" => {
            let quota = world
                .admin
                .get(&format!("/v1/quotas/{}/Cluster", world.beta_project))
                .await;
            check(
                quota["id"].is_i64() && quota["hard_limit"] == 5,
                format!("the new quota: {quota}"),
            )
        }
        "quota-updated" => {
            let quota = world
                .admin
                .get(&format!("/v1/quotas/{}/Cluster", world.alpha_project))
                .await;
            check(quota["hard_limit"] == 3, format!("the quota: {quota}"))
        }
        "quota-deleted" => {
            // Without a row of its own the project has the default, and no id.
            let quota = world
                .admin
                .get(&format!("/v1/quotas/{}/Cluster", world.beta_project))
                .await;
            check(quota.get("id").is_none(), format!("still there: {quota}"))
        }
        other => Err(format!("a step the test does not know: {other}")),
    }
}

/// The API answers 404 for `path`, at once or within 30 s (a delete runs on).
async fn gone(api: &Api, path: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = api.call("GET", path, None).await;
        if status == 404 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{path} is still there: {status} {body}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
