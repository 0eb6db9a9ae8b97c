//! `auth.strategy = "keystone"` against a real Keystone: the one `scripts/keystone start`
//! installs, bootstraps and fills (magnum-rs registered in its catalog, projects magnum-alpha
//! and magnum-beta with member and reader users), described by its fixture.json.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{engines, Reply, TestApp};

pub(crate) struct Fixture(pub(crate) Value);

impl Fixture {
    pub(crate) fn load() -> Self {
        Self(magnum_test_support::keystone_fixture())
    }

    pub(crate) fn auth_url(&self) -> &str {
        self.0["auth_url"].as_str().unwrap()
    }

    pub(crate) fn user(&self, name: &str) -> &Value {
        &self.0["users"][name]
    }

    /// The address magnum-rs is registered at in the catalog.
    fn registered_listen(&self) -> String {
        let url = self.0["magnum_url"].as_str().unwrap();
        url.trim_start_matches("http://")
            .trim_end_matches("/v1")
            .to_owned()
    }

    pub(crate) fn configure(&self, config: &mut magnumd::Config, cache_seconds: u64) {
        config.auth.strategy = magnumd::config::AuthStrategy::Keystone;
        config.auth.keystone.auth_url = self.auth_url().to_owned();
        config.auth.keystone.credentials_file =
            Some(PathBuf::from(self.0["credentials_file"].as_str().unwrap()));
        config.auth.keystone.cache_seconds = cache_seconds;
    }

    /// A project-scoped token of a fixture user (or the admin).
    pub(crate) async fn token(&self, user: &str) -> String {
        let (project, password) = if user == "admin" {
            (&self.0["admin"]["project"], &self.0["admin"]["password"])
        } else {
            (&self.user(user)["project"], &self.user(user)["password"])
        };
        login(
            self.auth_url(),
            json!({"auth": {
                "identity": {"methods": ["password"], "password": {"user": {
                    "name": user, "domain": {"id": "default"}, "password": password,
                }}},
                "scope": {"project": {"name": project, "domain": {"id": "default"}}},
            }}),
        )
        .await
        .0
    }
}

/// POST /v3/auth/tokens: the token and the validation body.
pub(crate) async fn login(auth_url: &str, body: Value) -> (String, Value) {
    let response = reqwest::Client::new()
        .post(format!("{auth_url}/auth/tokens"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201, "Keystone login refused");
    let token = response.headers()["x-subject-token"]
        .to_str()
        .unwrap()
        .to_owned();
    (token, response.json().await.unwrap())
}

/// An admin call to Keystone's own API.
async fn keystone_admin(
    fixture: &Fixture,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (u16, Value) {
    let admin = fixture.token("admin").await;
    let mut request = reqwest::Client::new()
        .request(method, format!("{}{path}", fixture.auth_url()))
        .header("X-Auth-Token", admin);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

pub(crate) async fn call(
    app: &TestApp,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> Reply {
    let headers = [
        ("X-Auth-Token", token),
        ("OpenStack-API-Version", "container-infra latest"),
    ];
    app.send(method, path, None, &headers, body).await
}

fn scripted_template(name: &str, public: bool) -> Value {
    json!({
        "name": name,
        "coe": "swarm-mode",
        "image_id": "scripted-image",
        "flavor_id": "s.small",
        "master_flavor_id": "s.small",
        "external_network_id": "public",
        "public": public,
    })
}

async fn wait_for_status(app: &TestApp, uuid: &str, token: &str, status: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let reply = call(app, "GET", &format!("/v1/clusters/{uuid}"), token, None).await;
        if reply.body["status"] == status {
            return reply.body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "cluster {uuid} is not {status}: {}",
            String::from_utf8_lossy(&reply.raw)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn requests_without_a_valid_token_get_keystonemiddlewares_401() {
    let fixture = Fixture::load();
    let (app, _driver) =
        TestApp::spawn_scripted_with(engines()[0], |config| fixture.configure(config, 60)).await;
    for token in [None, Some("not-a-token"), Some("")] {
        let headers: Vec<(&str, &str)> = token
            .map(|token| vec![("X-Auth-Token", token)])
            .unwrap_or_default();
        let reply = app
            .send("GET", "/v1/clustertemplates", None, &headers, None)
            .await;
        assert_eq!(reply.status, 401, "{token:?}");
        assert_eq!(
            String::from_utf8_lossy(&reply.raw),
            r#"{"error": {"code": 401, "title": "Unauthorized", "message": "The request you have made requires authentication."}}"#
        );
        assert_eq!(
            reply.header("www-authenticate"),
            Some(
                format!(
                    "Keystone uri=\"{}\"",
                    fixture.0["www_authenticate_uri"].as_str().unwrap()
                )
                .as_str()
            )
        );
    }
    // The version documents stay public, and so does the OpenAPI document.
    for path in ["/", "/v1", "/v1/openapi.json"] {
        assert_eq!(app.send("GET", path, None, &[], None).await.status, 200);
    }
    let token = fixture.token("alpha-member").await;
    for _ in 0..2 {
        assert_eq!(
            call(&app, "GET", "/v1/clustertemplates", &token, None)
                .await
                .status,
            200
        );
    }
    // /metrics saw Keystone's answers and the cache (the second use of the token a hit).
    let metrics = app.send("GET", "/metrics", None, &[], None).await;
    assert_eq!(metrics.status, 200);
    let text = String::from_utf8_lossy(&metrics.raw);
    for (series, at_least) in [
        (
            "magnum_keystone_token_cache_lookups_total{result=\"hit\"}",
            1,
        ),
        (
            "magnum_keystone_token_cache_lookups_total{result=\"miss\"}",
            2,
        ),
        (
            "magnum_keystone_token_validation_duration_seconds_count{outcome=\"valid\"}",
            1,
        ),
        (
            "magnum_keystone_token_validation_duration_seconds_count{outcome=\"invalid\"}",
            1,
        ),
    ] {
        let value = crate::support::sample(&text, series)
            .unwrap_or_else(|| panic!("no {series} in\n{text}"));
        assert!(value >= at_least as f64, "{series} = {value}");
    }
    app.stop().await;
}

#[tokio::test]
async fn projects_are_isolated_readers_read_and_admins_see_all() {
    let fixture = Fixture::load();
    let (app, _driver) =
        TestApp::spawn_scripted_with(engines()[0], |config| fixture.configure(config, 60)).await;
    let alpha = fixture.token("alpha-member").await;
    let reader = fixture.token("alpha-reader").await;
    let beta = fixture.token("beta-member").await;
    let admin = fixture.token("admin").await;

    let template = call(
        &app,
        "POST",
        "/v1/clustertemplates",
        &alpha,
        Some(scripted_template("private", false)),
    )
    .await;
    assert_eq!(
        template.status,
        201,
        "{}",
        String::from_utf8_lossy(&template.raw)
    );
    assert_eq!(
        template.body["project_id"],
        fixture.user("alpha-member")["project_id"]
    );
    assert_eq!(
        template.body["user_id"],
        fixture.user("alpha-member")["user_id"]
    );
    let template_uuid = template.body["uuid"].as_str().unwrap().to_owned();
    let cluster = call(
        &app,
        "POST",
        "/v1/clusters",
        &alpha,
        Some(json!({"name": "c1", "cluster_template_id": template_uuid, "node_count": 1})),
    )
    .await;
    assert_eq!(
        cluster.status,
        202,
        "{}",
        String::from_utf8_lossy(&cluster.raw)
    );
    let cluster_uuid = cluster.body["uuid"].as_str().unwrap().to_owned();
    wait_for_status(&app, &cluster_uuid, &alpha, "CREATE_COMPLETE").await;

    // The other project sees nothing and can touch nothing.
    let template_path = format!("/v1/clustertemplates/{template_uuid}");
    let cluster_path = format!("/v1/clusters/{cluster_uuid}");
    let listed = call(&app, "GET", "/v1/clustertemplates", &beta, None).await;
    assert_eq!(listed.body["clustertemplates"], json!([]));
    let listed = call(&app, "GET", "/v1/clusters", &beta, None).await;
    assert_eq!(listed.body["clusters"], json!([]));
    let replace_name = json!([{"op": "replace", "path": "/name", "value": "x"}]);
    let replace_count = json!([{"op": "replace", "path": "/node_count", "value": 2}]);
    let resize = json!({"node_count": 2});
    let sign = json!({"cluster_uuid": cluster_uuid, "csr": "-----BEGIN CERTIFICATE REQUEST-----\nAA==\n-----END CERTIFICATE REQUEST-----\n"});
    for (method, path, body) in [
        ("GET", template_path.clone(), None),
        ("PATCH", template_path.clone(), Some(replace_name.clone())),
        ("DELETE", template_path.clone(), None),
        ("GET", cluster_path.clone(), None),
        ("PATCH", cluster_path.clone(), Some(replace_count.clone())),
        (
            "POST",
            format!("{cluster_path}/actions/resize"),
            Some(resize.clone()),
        ),
        ("DELETE", cluster_path.clone(), None),
        ("GET", format!("/v1/certificates/{cluster_uuid}"), None),
        ("PATCH", format!("/v1/certificates/{cluster_uuid}"), None),
    ] {
        let reply = call(&app, method, &path, &beta, body).await;
        assert_eq!(
            reply.status,
            404,
            "{method} {path} by another project: {}",
            String::from_utf8_lossy(&reply.raw)
        );
    }
    // Signing names the cluster in the body: upstream answers 400 "could not be found".
    let reply = call(&app, "POST", "/v1/certificates", &beta, Some(sign)).await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.detail(),
        format!("Cluster {cluster_uuid} could not be found.")
    );
    // A cluster of the other project cannot be built from the private template either.
    let reply = call(
        &app,
        "POST",
        "/v1/clusters",
        &beta,
        Some(json!({"name": "c2", "cluster_template_id": template_uuid})),
    )
    .await;
    assert!(matches!(reply.status, 400 | 404), "{}", reply.status);

    // The reader of the owning project reads and cannot write.
    assert_eq!(
        call(&app, "GET", &cluster_path, &reader, None).await.status,
        200
    );
    // Certificates belong to the user who owns the cluster (upstream's is_user rule).
    let ca_path = format!("/v1/certificates/{cluster_uuid}");
    assert_eq!(call(&app, "GET", &ca_path, &reader, None).await.status, 403);
    assert_eq!(call(&app, "GET", &ca_path, &alpha, None).await.status, 200);
    for (method, path, body) in [
        (
            "POST",
            "/v1/clustertemplates".to_owned(),
            Some(scripted_template("r", false)),
        ),
        ("PATCH", template_path.clone(), Some(replace_name.clone())),
        ("PATCH", cluster_path.clone(), Some(replace_count.clone())),
        (
            "POST",
            format!("{cluster_path}/actions/resize"),
            Some(resize.clone()),
        ),
        ("DELETE", cluster_path.clone(), None),
        ("DELETE", template_path.clone(), None),
    ] {
        let reply = call(&app, method, &path, &reader, body).await;
        assert_eq!(
            reply.status,
            403,
            "{method} {path} by a reader: {}",
            String::from_utf8_lossy(&reply.raw)
        );
    }

    // The admin sees and reads across projects.
    assert_eq!(
        call(&app, "GET", &cluster_path, &admin, None).await.status,
        200
    );
    assert_eq!(
        call(&app, "GET", &template_path, &admin, None).await.status,
        200
    );

    // Quotas name projects Keystone must know.
    let alpha_project = fixture.user("alpha-member")["project_id"].as_str().unwrap();
    let quota = json!({"project_id": alpha_project, "resource": "Cluster", "hard_limit": 5});
    let reply = call(&app, "POST", "/v1/quotas", &alpha, Some(quota.clone())).await;
    assert_eq!(reply.status, 403);
    let reply = call(&app, "POST", "/v1/quotas", &admin, Some(quota)).await;
    assert_eq!(reply.status, 201, "{}", String::from_utf8_lossy(&reply.raw));
    let unknown = json!({"project_id": "0123456789abcdef0123456789abcdef", "hard_limit": 5});
    let reply = call(&app, "POST", "/v1/quotas", &admin, Some(unknown)).await;
    assert_eq!(reply.status, 404);
    assert_eq!(
        reply.detail(),
        "The project_id 0123456789abcdef0123456789abcdef could not be found."
    );

    // And the owner still has all of it, unchanged.
    let shown = call(&app, "GET", &cluster_path, &alpha, None).await.body;
    assert_eq!(shown["node_count"], 1);
    assert_eq!(shown["status"], "CREATE_COMPLETE");
    assert_eq!(
        call(&app, "DELETE", &cluster_path, &alpha, None)
            .await
            .status,
        204
    );
    app.stop().await;
}

#[tokio::test]
async fn revoked_tokens_and_deleted_projects_are_refused_once_the_cache_time_passed() {
    let fixture = Fixture::load();
    let (app, _driver) =
        TestApp::spawn_scripted_with(engines()[0], |config| fixture.configure(config, 2)).await;

    // Revoked.
    let token = fixture.token("alpha-member").await;
    assert_eq!(
        call(&app, "GET", "/v1/clusters", &token, None).await.status,
        200
    );
    let (status, _) = keystone_admin(
        &fixture,
        reqwest::Method::DELETE,
        "/auth/tokens",
        &[("X-Subject-Token", token.as_str())],
        None,
    )
    .await;
    assert_eq!(status, 204);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(
        call(&app, "GET", "/v1/clusters", &token, None).await.status,
        401
    );

    // A project deleted while its member's token is in use.
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let (status, project) = keystone_admin(
        &fixture,
        reqwest::Method::POST,
        "/projects",
        &[],
        Some(json!({"project": {"name": format!("gone-{suffix}"), "domain_id": "default"}})),
    )
    .await;
    assert_eq!(status, 201);
    let project_id = project["project"]["id"].as_str().unwrap().to_owned();
    let user_name = format!("gone-user-{suffix}");
    let (status, user) = keystone_admin(
        &fixture,
        reqwest::Method::POST,
        "/users",
        &[],
        Some(json!({"user": {"name": user_name, "domain_id": "default", "password": "pw-gone"}})),
    )
    .await;
    assert_eq!(status, 201);
    let user_id = user["user"]["id"].as_str().unwrap().to_owned();
    let (_, roles) = keystone_admin(
        &fixture,
        reqwest::Method::GET,
        "/roles?name=member",
        &[],
        None,
    )
    .await;
    let member = roles["roles"][0]["id"].as_str().unwrap().to_owned();
    let (status, _) = keystone_admin(
        &fixture,
        reqwest::Method::PUT,
        &format!("/projects/{project_id}/users/{user_id}/roles/{member}"),
        &[],
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (token, _) = login(
        fixture.auth_url(),
        json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {"id": user_id, "password": "pw-gone"}}},
            "scope": {"project": {"id": project_id}},
        }}),
    )
    .await;
    let created = call(
        &app,
        "POST",
        "/v1/clustertemplates",
        &token,
        Some(scripted_template("doomed", false)),
    )
    .await;
    assert_eq!(created.status, 201);
    assert_eq!(created.body["project_id"], project_id.as_str());
    let (status, _) = keystone_admin(
        &fixture,
        reqwest::Method::DELETE,
        &format!("/projects/{project_id}"),
        &[],
        None,
    )
    .await;
    assert_eq!(status, 204);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(
        call(&app, "GET", "/v1/clustertemplates", &token, None)
            .await
            .status,
        401
    );
    keystone_admin(
        &fixture,
        reqwest::Method::DELETE,
        &format!("/users/{user_id}"),
        &[],
        None,
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn an_expired_token_is_refused_however_long_the_cache_time() {
    let fixture = Fixture::load();
    let (app, _driver) =
        TestApp::spawn_scripted_with(engines()[0], |config| fixture.configure(config, 3600)).await;
    // Keystone caps a token issued for an application credential at the credential's expiry.
    let user = fixture.user("alpha-member");
    let user_token = fixture.token("alpha-member").await;
    // Long enough for the login and the first call on a loaded machine (4 s was not).
    let expires = chrono::Utc::now() + chrono::Duration::seconds(12);
    let expires_at = expires.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    let response = reqwest::Client::new()
        .post(format!(
            "{}/users/{}/application_credentials",
            fixture.auth_url(),
            user["user_id"].as_str().unwrap()
        ))
        .header("X-Auth-Token", &user_token)
        .json(&json!({"application_credential": {
            "name": format!("short-{}", uuid::Uuid::new_v4().simple()),
            "expires_at": expires_at,
        }}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let credential: Value = response.json().await.unwrap();
    let (token, body) = login(
        fixture.auth_url(),
        json!({"auth": {"identity": {
            "methods": ["application_credential"],
            "application_credential": {
                "id": credential["application_credential"]["id"],
                "secret": credential["application_credential"]["secret"],
            },
        }}}),
    )
    .await;
    assert!(body["token"]["expires_at"].as_str().unwrap() <= expires_at.as_str());
    assert_eq!(
        call(&app, "GET", "/v1/clusters", &token, None).await.status,
        200
    );
    let until_expired = (expires - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(until_expired + Duration::from_secs(1)).await;
    assert_eq!(
        call(&app, "GET", "/v1/clusters", &token, None).await.status,
        401
    );
    app.stop().await;
}

#[tokio::test]
async fn keystone_out_of_reach_means_503_never_a_request_let_through() {
    let fixture = Fixture::load();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_url = format!("http://{}/v3", closed.local_addr().unwrap());
    drop(closed);
    let (app, _driver) = TestApp::spawn_scripted_with(engines()[0], |config| {
        fixture.configure(config, 60);
        config.auth.keystone.auth_url = closed_url.clone();
        config.auth.keystone.timeout_seconds = 2;
    })
    .await;
    let token = fixture.token("alpha-member").await;
    let reply = call(&app, "GET", "/v1/clustertemplates", &token, None).await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.body["errors"][0]["status"], 503);
    let reply = call(
        &app,
        "POST",
        "/v1/clustertemplates",
        &token,
        Some(scripted_template("never", true)),
    )
    .await;
    assert_eq!(reply.status, 503);
    app.stop().await;
}

/// The real `openstack coe` client, with nothing but Keystone credentials: it finds
/// magnum-rs in the catalog (registered by scripts/keystone-register).
fn openstack(fixture: &Fixture, user: &str, arguments: &[&str]) -> (i32, String, String) {
    let binary = std::env::var("MAGNUM_OPENSTACK_CLI")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/openstack")
        });
    let output = Command::new(binary)
        .args(arguments)
        .env_remove("OS_CLOUD")
        .env("OS_AUTH_URL", fixture.auth_url())
        .env("OS_IDENTITY_API_VERSION", "3")
        .env("OS_USERNAME", user)
        .env(
            "OS_PASSWORD",
            fixture.user(user)["password"].as_str().unwrap(),
        )
        .env(
            "OS_PROJECT_NAME",
            fixture.user(user)["project"].as_str().unwrap(),
        )
        .env("OS_USER_DOMAIN_NAME", "Default")
        .env("OS_PROJECT_DOMAIN_NAME", "Default")
        .env("OS_AUTH_TYPE", "password")
        .output()
        .expect("the openstack client runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs the client off the async runtime; returns stdout when it must succeed, stderr when
/// it must fail.
async fn openstack_expecting(
    success: bool,
    fixture: &Fixture,
    user: &str,
    arguments: &[&str],
) -> String {
    let fixture = Fixture(fixture.0.clone());
    let user = user.to_owned();
    let arguments: Vec<String> = arguments
        .iter()
        .map(|argument| (*argument).to_owned())
        .collect();
    tokio::task::spawn_blocking(move || {
        let arguments: Vec<&str> = arguments.iter().map(String::as_str).collect();
        let (code, stdout, stderr) = openstack(&fixture, &user, &arguments);
        assert_eq!(
            code == 0,
            success,
            "openstack {arguments:?} as {user}: exit {code}: {stdout}{stderr}"
        );
        if success {
            stdout
        } else {
            stderr
        }
    })
    .await
    .unwrap()
}

async fn openstack_ok(fixture: &Fixture, user: &str, arguments: &[&str]) -> String {
    openstack_expecting(true, fixture, user, arguments).await
}

async fn openstack_fails(fixture: &Fixture, user: &str, arguments: &[&str]) -> String {
    openstack_expecting(false, fixture, user, arguments).await
}

#[tokio::test]
async fn openstack_coe_with_keystone_auth_runs_the_template_and_cluster_lifecycle() {
    let fixture = Fixture::load();
    let listen = fixture.registered_listen();
    let (app, _driver) = TestApp::spawn_scripted_with(engines()[0], |config| {
        fixture.configure(config, 60);
        config.server.listen = listen.clone();
    })
    .await;
    let alpha = "alpha-member";
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let template = format!("ks-t-{suffix}");
    let cluster = format!("ks-c-{suffix}");
    openstack_ok(
        &fixture,
        alpha,
        &[
            "coe",
            "cluster",
            "template",
            "create",
            &template,
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
    let listed = openstack_ok(
        &fixture,
        alpha,
        &["coe", "cluster", "template", "list", "-f", "json"],
    )
    .await;
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    let created = openstack_ok(
        &fixture,
        alpha,
        &[
            "coe",
            "cluster",
            "create",
            &cluster,
            "--cluster-template",
            &template,
            "--node-count",
            "1",
        ],
    )
    .await;
    assert!(
        created.starts_with("Request to create cluster "),
        "{created}"
    );
    let shown = openstack_ok(
        &fixture,
        alpha,
        &["coe", "cluster", "show", &cluster, "-f", "json"],
    )
    .await;
    let shown: Value = serde_json::from_str(&shown).unwrap();
    let uuid = shown["uuid"].as_str().unwrap().to_owned();
    assert_eq!(shown["project_id"], fixture.user(alpha)["project_id"]);
    let token = fixture.token(alpha).await;
    wait_for_status(&app, &uuid, &token, "CREATE_COMPLETE").await;

    // The other project's client cannot see it; the reader cannot change it.
    let stderr = openstack_fails(
        &fixture,
        "beta-member",
        &["coe", "cluster", "show", &cluster],
    )
    .await;
    assert!(stderr.contains("could not be found"), "{stderr}");
    let stderr = openstack_fails(
        &fixture,
        "alpha-reader",
        &["coe", "cluster", "update", &cluster, "--node-count", "2"],
    )
    .await;
    assert!(stderr.contains("Policy doesn't allow"), "{stderr}");

    openstack_ok(
        &fixture,
        alpha,
        &["coe", "cluster", "update", &cluster, "--node-count", "2"],
    )
    .await;
    wait_for_status(&app, &uuid, &token, "UPDATE_COMPLETE").await;
    openstack_ok(
        &fixture,
        alpha,
        &["coe", "cluster", "resize", &cluster, "1"],
    )
    .await;
    let resized = wait_for_status(&app, &uuid, &token, "UPDATE_COMPLETE").await;
    assert_eq!(resized["node_count"], 1);
    openstack_ok(&fixture, alpha, &["coe", "cluster", "delete", &cluster]).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while call(&app, "GET", &format!("/v1/clusters/{uuid}"), &token, None)
        .await
        .status
        != 404
    {
        assert!(std::time::Instant::now() < deadline, "cluster not deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    openstack_ok(
        &fixture,
        alpha,
        &["coe", "cluster", "template", "delete", &template],
    )
    .await;
    let listed = openstack_ok(
        &fixture,
        alpha,
        &["coe", "cluster", "template", "list", "-f", "json"],
    )
    .await;
    assert_eq!(serde_json::from_str::<Value>(&listed).unwrap(), json!([]));
    app.stop().await;
}

#[tokio::test]
async fn magnumd_can_log_in_with_an_application_credential() {
    let fixture = Fixture::load();
    // The service user makes its own application credential (Keystone allows no one else to).
    let credentials =
        std::fs::read_to_string(fixture.0["credentials_file"].as_str().unwrap()).unwrap();
    let password = credentials
        .lines()
        .find_map(|line| line.strip_prefix("password = "))
        .unwrap()
        .trim_matches('"')
        .to_owned();
    let (service_token, body) = login(
        fixture.auth_url(),
        json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": "magnum", "domain": {"id": "default"}, "password": password,
            }}},
            "scope": {"project": {"name": "service", "domain": {"id": "default"}}},
        }}),
    )
    .await;
    let user_id = body["token"]["user"]["id"].as_str().unwrap();
    let response = reqwest::Client::new()
        .post(format!(
            "{}/users/{user_id}/application_credentials",
            fixture.auth_url()
        ))
        .header("X-Auth-Token", &service_token)
        .json(&json!({"application_credential": {
            "name": format!("magnumd-{}", uuid::Uuid::new_v4().simple()),
        }}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let created: Value = response.json().await.unwrap();
    let directory = tempfile::tempdir().unwrap();
    let file = directory.path().join("application-credential.toml");
    std::fs::write(
        &file,
        format!(
            "application_credential_id = \"{}\"\napplication_credential_secret = \"{}\"\n",
            created["application_credential"]["id"].as_str().unwrap(),
            created["application_credential"]["secret"]
                .as_str()
                .unwrap()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let (app, _driver) = TestApp::spawn_scripted_with(engines()[0], |config| {
        fixture.configure(config, 60);
        config.auth.keystone.credentials_file = Some(file.clone());
    })
    .await;
    let token = fixture.token("beta-member").await;
    let reply = call(&app, "GET", "/v1/clusters", &token, None).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.raw));
    let reply = call(&app, "GET", "/v1/clusters", "made-up", None).await;
    assert_eq!(reply.status, 401);
    app.stop().await;
}

#[tokio::test]
async fn wrong_service_credentials_mean_503_for_every_token() {
    let fixture = Fixture::load();
    let directory = tempfile::tempdir().unwrap();
    let file = directory.path().join("wrong.toml");
    std::fs::write(
        &file,
        "username = \"magnum\"\npassword = \"not-the-password\"\nproject_name = \"service\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let (app, _driver) = TestApp::spawn_scripted_with(engines()[0], |config| {
        fixture.configure(config, 60);
        config.auth.keystone.credentials_file = Some(file.clone());
    })
    .await;
    let valid = fixture.token("alpha-member").await;
    for token in [valid.as_str(), "made-up"] {
        let reply = call(&app, "GET", "/v1/clustertemplates", token, None).await;
        assert_eq!(reply.status, 503, "{}", String::from_utf8_lossy(&reply.raw));
        assert_eq!(
            reply.detail(),
            "The identity service is unavailable. Retry later."
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn a_stream_ends_with_a_clear_event_when_its_token_is_revoked() {
    let fixture = Fixture::load();
    let (app, _driver) = TestApp::spawn_scripted_with(engines()[0], |config| {
        fixture.configure(config, 1);
        config.events.recheck_token = 1;
    })
    .await;
    let watch = |token: String| {
        crate::support::test_client()
            .get(format!("{}/v1/events?watch=true", app.base_url))
            .header("Accept", "text/event-stream")
            .header("X-Auth-Token", token)
            .send()
    };
    let token = fixture.token("alpha-member").await;
    let mut response = watch(token.clone()).await.unwrap();
    assert_eq!(response.status(), 200);
    let other = fixture.token("beta-member").await;
    let (status, _) = keystone_admin(
        &fixture,
        reqwest::Method::DELETE,
        "/auth/tokens",
        &[("X-Subject-Token", token.as_str())],
        None,
    )
    .await;
    assert_eq!(status, 204);
    // Within the cache time and a recheck: an `end` event naming why, then the end.
    let mut received = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, response.chunk()).await {
            Ok(Ok(Some(bytes))) => received.push_str(&String::from_utf8_lossy(&bytes)),
            Ok(Ok(None)) => break,
            Ok(Err(error)) => panic!("{error}: {received}"),
            Err(_) => panic!("the stream outlived its revoked token: {received}"),
        }
    }
    let end = received
        .split("\n\n")
        .find(|block| block.lines().any(|line| line == "event: end"))
        .unwrap_or_else(|| panic!("no end event: {received}"));
    let data: Value = serde_json::from_str(
        end.lines()
            .find_map(|line| line.strip_prefix("data: "))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(data["reason"], "token_expired", "{received}");
    // Another user's stream goes on.
    let still = watch(other.clone()).await.unwrap();
    assert_eq!(still.status(), 200);
    // A revoked token cannot open a stream at all.
    let refused = watch(token.clone()).await.unwrap();
    assert_eq!(refused.status(), 401);
    app.stop().await;
}
