//! The embedded dashboard (`/dashboard/`) in a real browser: Debian's headless Chromium
//! driven through chromedriver (`magnum_test_support::webdriver`).
//!
//! * noauth, the local driver: a template and a real 1 + 1 swarm cluster made through the
//!   forms, watched to CREATE_COMPLETE live (no reload), scaled, its client bundle downloaded
//!   and used with `docker node ls`, then deleted with a confirmation; the template form
//!   shows the API's 400 detail next to the field.
//! * Keystone (the test Keystone of `scripts/keystone`): log in, a wrong password, what one
//!   project cannot see of another, CSRF on every change, the project switcher, log out.
//!
//! Screenshots of the main pages are kept in `.work/screenshots/` (or
//! `MAGNUM_TEST_SCREENSHOTS`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use magnum_test_support::webdriver::Browser;
use serde_json::{json, Value};

use crate::keystone::{call, Fixture};
use crate::local_driver::{leftovers, run};
use crate::support::{engines, TestApp};

const WIDE: (u32, u32) = (1280, 1000);

fn screenshots() -> PathBuf {
    std::env::var_os("MAGNUM_TEST_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.work/screenshots"))
}

/// The element ids the forms give their controls: `[name=…]` inside a form.
fn control(form: &str, name: &str) -> String {
    format!("{form} [name=\"{name}\"]")
}

/// The error shown next to a form's control.
async fn field_error(browser: &Browser, form: &str, name: &str) -> String {
    browser
        .execute(
            "const control = document.querySelector(arguments[0]); \
             const box = control && document.getElementById(control.id + '-error'); \
             return box ? box.textContent : null;",
            json!([control(form, name)]),
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Every control of the page's forms has a label (screen readers name it by that).
async fn assert_labelled(browser: &Browser, what: &str) {
    let unlabelled = browser
        .execute(
            "return [...document.querySelectorAll('main input, main select, main textarea, dialog input, dialog select, dialog textarea')] \
               .filter((control) => control.labels.length === 0).map((control) => control.name);",
            json!([]),
        )
        .await;
    assert_eq!(unlabelled, json!([]), "{what}: controls without a label");
}

/// Deletes what the default noauth identity has left, whatever happened.
async fn delete_all_clusters(app: &TestApp) {
    let listed = app
        .send(
            "GET",
            "/v1/clusters",
            None,
            &[("OpenStack-API-Version", "container-infra latest")],
            None,
        )
        .await;
    for cluster in listed.body["clusters"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let uuid = cluster["uuid"].as_str().unwrap_or_default().to_owned();
        app.send("DELETE", &format!("/v1/clusters/{uuid}"), None, &[], None)
            .await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
        while std::time::Instant::now() < deadline {
            let reply = app
                .send("GET", &format!("/v1/clusters/{uuid}"), None, &[], None)
                .await;
            if reply.status == 404 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_cluster_is_made_watched_scaled_reached_and_deleted_in_the_browser() {
    let app = TestApp::spawn_with(engines()[0], magnumd::Role::All, |config| {
        config.drivers.local.network_pool = "10.89.0.0/16".to_owned();
    })
    .await;
    let app = Arc::new(app);
    let outcome = tokio::spawn({
        let app = app.clone();
        async move { real_cluster_in_the_browser(&app).await }
    })
    .await;
    if outcome.is_err() {
        delete_all_clusters(&app).await;
    }
    let app = Arc::try_unwrap(app)
        .ok()
        .expect("the test body is done with the app");
    app.stop().await;
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

async fn real_cluster_in_the_browser(app: &TestApp) {
    let shots = screenshots();
    let browser = Browser::start(WIDE.0, WIDE.1).await;
    let dashboard = format!("{}/dashboard/", app.base_url);
    browser.goto(&dashboard).await;
    // noauth: no login, the clusters page with nothing in it yet.
    browser.find("#create-cluster", 60).await;
    browser.wait_for_text("main h1", "Clusters", 10).await;
    assert!(
        browser.try_find("#logout").await.is_none(),
        "noauth has no log out"
    );

    // The skip link (the first stop of the keyboard) moves the focus to the content.
    browser
        .find(".skip-link", 10)
        .await
        .send_keys(&browser, "\u{E007}")
        .await;
    browser
        .wait_until(
            "the focus on the content, the route unchanged",
            "return document.activeElement.id === 'main' && location.hash === '#/clusters';",
            json!([]),
            10,
        )
        .await;

    // The admin pages (noauth's default identity is an admin): a quota created, changed and
    // deleted; the stats; the conductor reporting.
    browser.click("#nav a[data-section=quotas]").await;
    let form = "#quota-form";
    browser.find(form, 60).await;
    assert_eq!(browser.text("#stats-clusters").await, "0");
    browser.fill(&control(form, "project_id"), "p-other").await;
    browser.fill(&control(form, "hard_limit"), "3").await;
    browser.click(&format!("{form} button[type=submit]")).await;
    browser.find("tr[data-project=p-other]", 60).await;
    browser.click("tr[data-project=p-other] button").await;
    browser.fill("dialog[open] [name=hard_limit]", "5").await;
    browser.click("dialog[open] button[type=submit]").await;
    browser
        .wait_until(
            "the quota is 5",
            "const row = document.querySelector('tr[data-project=p-other]'); \
             return row !== null && row.children[2].textContent === '5';",
            json!([]),
            60,
        )
        .await;
    let quota = app
        .send("GET", "/v1/quotas/p-other/Cluster", None, &[], None)
        .await;
    assert_eq!(quota.body["hard_limit"], 5, "{}", quota.body);
    // The same project again: the API's 409 detail in the form.
    browser.fill(&control(form, "project_id"), "p-other").await;
    browser.fill(&control(form, "hard_limit"), "3").await;
    browser.click(&format!("{form} button[type=submit]")).await;
    browser
        .wait_until(
            "the duplicate quota refused",
            "return document.querySelector('#quota-form .form-error').textContent.includes('already exists');",
            json!([]),
            60,
        )
        .await;
    browser
        .click("tr[data-project=p-other] button:nth-of-type(2)")
        .await;
    browser.click("dialog[open] button[type=submit]").await;
    browser
        .wait_until(
            "the quota is gone",
            "return document.querySelector('tr[data-project=p-other]') === null && document.querySelector('#quota-form') !== null;",
            json!([]),
            60,
        )
        .await;
    browser.click("#nav a[data-section=services]").await;
    browser
        .wait_until(
            "a conductor that is up",
            "return [...document.querySelectorAll('main tbody tr')].some((row) => row.textContent.includes('up'));",
            json!([]),
            60,
        )
        .await;

    // A template through the form; first with an image the driver does not have: the API's
    // 400 detail is shown next to the image field.
    browser.click("#nav a[data-section=templates]").await;
    browser.click("#create-template").await;
    let form = "#template-form";
    browser.find(form, 10).await;
    browser.fill(&control(form, "name"), "web-swarm").await;
    browser.choose(&control(form, "coe"), "swarm-mode").await;
    browser
        .fill(&control(form, "image_id"), "no-such-image")
        .await;
    browser
        .fill(&control(form, "master_flavor_id"), "local.small")
        .await;
    browser
        .fill(&control(form, "flavor_id"), "local.small")
        .await;
    browser
        .fill(&control(form, "external_network_id"), "local")
        .await;
    browser.click(&format!("{form} button[type=submit]")).await;
    let refused = app
        .send(
            "POST",
            "/v1/clustertemplates",
            None,
            &[],
            Some(json!({"name": "web-swarm-check", "coe": "swarm-mode", "image_id": "no-such-image",
                "master_flavor_id": "local.small", "flavor_id": "local.small", "external_network_id": "local"})),
        )
        .await;
    assert_eq!(
        refused.status,
        400,
        "{}",
        String::from_utf8_lossy(&refused.raw)
    );
    let detail = refused.detail().to_owned();
    assert!(detail.contains("no-such-image"), "{detail}");
    browser
        .wait_until(
            "the API's detail next to the image field",
            "const control = document.querySelector(arguments[0]); \
             const box = document.getElementById(control.id + '-error'); \
             return box.textContent === arguments[1] && control.getAttribute('aria-invalid') === 'true' \
               && document.activeElement === control;",
            json!([control(form, "image_id"), detail]),
            10,
        )
        .await;
    assert_eq!(browser.text(&format!("{form} .form-error")).await, detail);
    assert_eq!(field_error(&browser, form, "flavor_id").await, "");
    assert_labelled(&browser, "the template form").await;
    browser
        .screenshot_full_page(&shots.join("template-form.png"))
        .await;
    // Labels the form itself refuses, before anything is sent.
    browser.fill(&control(form, "image_id"), "local-node").await;
    browser
        .fill(&control(form, "labels"), "no-equals-sign")
        .await;
    browser.click(&format!("{form} button[type=submit]")).await;
    browser
        .wait_until(
            "the labels error",
            "const control = document.querySelector(arguments[0]); \
             return document.getElementById(control.id + '-error').textContent.includes('no \"=\"');",
            json!([control(form, "labels")]),
            10,
        )
        .await;
    browser.fill(&control(form, "labels"), "").await;
    browser.click(&format!("{form} button[type=submit]")).await;
    browser.wait_for_text("main h1", "web-swarm", 60).await;
    let templates = app
        .send("GET", "/v1/clustertemplates", None, &[], None)
        .await;
    let template = templates.body["clustertemplates"][0].clone();
    assert_eq!(template["name"], "web-swarm", "{template}");
    assert_eq!(template["image_id"], "local-node");
    assert_eq!(template["coe"], "swarm-mode");

    // A cluster from it: one master, one worker.
    browser
        .click("main a.button.primary[href^='#/clusters/new']")
        .await;
    let form = "#cluster-form";
    browser.find(form, 10).await;
    assert_eq!(
        browser
            .find(&control(form, "cluster_template_id"), 5)
            .await
            .property(&browser, "value")
            .await,
        template["uuid"]
    );
    assert_labelled(&browser, "the cluster form").await;
    browser.fill(&control(form, "name"), "web").await;
    browser.fill(&control(form, "master_count"), "1").await;
    browser.fill(&control(form, "node_count"), "1").await;
    browser.click(&format!("{form} button[type=submit]")).await;
    browser.wait_for_text("main h1", "web", 60).await;
    let url = browser.current_url().await;
    let uuid = url.rsplit('/').next().unwrap().to_owned();
    assert_eq!(uuid.len(), 36, "{url}");
    // From here on the page must change by itself: a marker set now survives only if the
    // page is never reloaded.
    browser
        .execute("window.__dashboardMarker = arguments[0];", json!([uuid]))
        .await;
    browser
        .wait_until(
            "the live stream is open",
            "return document.querySelector('#live-indicator').dataset.mode === 'live';",
            json!([]),
            60,
        )
        .await;
    let first_status = browser.text("#cluster-status").await;
    assert!(
        first_status == "CREATE_IN_PROGRESS" || first_status == "CREATE_COMPLETE",
        "{first_status}"
    );
    browser
        .wait_for_text("#cluster-status", "CREATE_COMPLETE", 240)
        .await;
    assert_eq!(
        browser
            .execute("return window.__dashboardMarker;", json!([]))
            .await,
        json!(uuid),
        "the page was reloaded"
    );
    // The events arrived as they happened (only the stream adds "fresh" items), the nodes
    // report their health.
    let fresh = browser
        .execute(
            "return document.querySelectorAll('#timeline li.fresh').length;",
            json!([]),
        )
        .await;
    assert!(fresh.as_u64().unwrap_or(0) >= 2, "{fresh}");
    let timeline = browser.text("#timeline").await;
    assert!(timeline.contains("CreateCompleted"), "{timeline}");
    browser
        .wait_for_text("#cluster-health", "HEALTHY", 60)
        .await;
    browser
        .wait_until(
            "two Ready nodes",
            "const nodes = [...document.querySelectorAll('#nodes li')]; \
             return nodes.length === 2 && nodes.every((node) => node.textContent.includes('Ready') && !node.textContent.includes('NotReady'));",
            json!([]),
            60,
        )
        .await;
    browser.screenshot(&shots.join("cluster-created.png")).await;

    // Scale the workers to 2 through the resize dialog; it too is seen live.
    browser.click("#resize").await;
    browser.find("dialog[open] [name=node_count]", 10).await;
    assert_labelled(&browser, "the resize dialog").await;
    // Escape closes a dialog (the native <dialog>), and the focus goes back to its button.
    browser
        .find("dialog[open] [name=node_count]", 10)
        .await
        .send_keys(&browser, "\u{E00C}")
        .await;
    browser
        .wait_until(
            "Escape closed the dialog",
            "return document.querySelector('dialog[open]') === null && document.activeElement.id === 'resize';",
            json!([]),
            10,
        )
        .await;
    browser.click("#resize").await;
    browser.find("dialog[open] [name=node_count]", 10).await;
    browser.fill("dialog[open] [name=node_count]", "2").await;
    browser.click("dialog[open] button[type=submit]").await;
    browser
        .wait_until(
            "the dialog closed",
            "return document.querySelector('dialog[open]') === null;",
            json!([]),
            10,
        )
        .await;
    browser
        .wait_for_text("#cluster-status", "UPDATE_COMPLETE", 240)
        .await;
    browser
        .wait_until(
            "three Ready nodes",
            "const nodes = [...document.querySelectorAll('#nodes li')]; \
             return nodes.length === 3 && nodes.every((node) => !node.textContent.includes('NotReady'));",
            json!([]),
            60,
        )
        .await;
    assert_eq!(
        browser
            .execute("return window.__dashboardMarker;", json!([]))
            .await,
        json!(uuid)
    );
    let cluster = app
        .send("GET", &format!("/v1/clusters/{uuid}"), None, &[], None)
        .await
        .body;
    assert_eq!(cluster["node_count"], 2, "{cluster}");

    // "Connect to this cluster": the bundle is made in the browser and used with docker.
    browser.click("#download-config").await;
    let bundle = browser.downloaded("web.tar", 30).await;
    browser.find("#connect-commands", 10).await;
    let commands = browser.text("#connect-commands").await;
    assert!(commands.contains("tar -xf web.tar"), "{commands}");
    let work = tempfile::tempdir().unwrap();
    let (ok, listing) = run("tar", &["-tvf", bundle.to_str().unwrap()], work.path());
    assert!(ok, "{listing}");
    assert!(
        listing
            .lines()
            .any(|line| line.starts_with("-rw-------") && line.ends_with("web/key.pem")),
        "{listing}"
    );
    let (ok, output) = run("tar", &["-xf", bundle.to_str().unwrap()], work.path());
    assert!(ok, "{output}");
    let directory = work.path().join("web");
    for file in ["ca.pem", "cert.pem", "key.pem", "env.sh"] {
        assert!(directory.join(file).exists(), "{file} is not in the bundle");
    }
    let key = std::fs::read_to_string(directory.join("key.pem")).unwrap();
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "{key}");
    let env = std::fs::read_to_string(directory.join("env.sh")).unwrap();
    assert!(
        env.contains(&format!(
            "export DOCKER_HOST={}",
            cluster["api_address"].as_str().unwrap()
        )),
        "{env}"
    );
    let (ok, nodes) = run(
        "sh",
        &[
            "-c",
            ". ./env.sh && docker node ls --format '{{.Status}} {{.Hostname}}'",
        ],
        &directory,
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
    // The certificate is a client certificate of the cluster's CA with the subject asked for.
    let (ok, subject) = run(
        "openssl",
        &["x509", "-in", "cert.pem", "-noout", "-subject"],
        &directory,
    );
    assert!(
        ok && subject.contains("admin") && subject.contains("system:masters"),
        "{subject}"
    );
    browser
        .screenshot_full_page(&shots.join("cluster-details.png"))
        .await;

    // The list shows the cluster at a glance.
    browser.click("#nav a[data-section=clusters]").await;
    browser.find(&format!("tr[data-uuid=\"{uuid}\"]"), 10).await;
    let row = browser.text(&format!("tr[data-uuid=\"{uuid}\"]")).await;
    assert!(
        row.contains("UPDATE_COMPLETE") && row.contains("HEALTHY"),
        "{row}"
    );
    browser.screenshot(&shots.join("clusters.png")).await;
    // Phone width: nothing sticks out sideways.
    browser.resize(390, 844).await;
    browser
        .wait_until(
            "the page fits a phone's width",
            "return document.documentElement.scrollWidth <= document.documentElement.clientWidth;",
            json!([]),
            5,
        )
        .await;
    browser.screenshot(&shots.join("clusters-phone.png")).await;
    browser.click(&format!("tr[data-uuid=\"{uuid}\"] a")).await;
    browser.find("#delete-cluster", 10).await;
    browser
        .wait_until(
            "the cluster's page fits a phone's width",
            "return document.documentElement.scrollWidth <= document.documentElement.clientWidth;",
            json!([]),
            5,
        )
        .await;
    browser.screenshot(&shots.join("cluster-phone.png")).await;
    browser.resize(WIDE.0, WIDE.1).await;

    // Delete with a confirmation; Cancel first, which keeps the cluster.
    browser
        .execute("window.__dashboardMarker = 'before delete';", json!([]))
        .await;
    browser.click("#delete-cluster").await;
    browser.find("dialog[open]", 10).await;
    let focused = browser
        .execute("return document.activeElement.textContent;", json!([]))
        .await;
    assert_eq!(focused, "Cancel", "a destructive dialog starts on Cancel");
    browser.click("dialog[open] button.cancel").await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        app.send("GET", &format!("/v1/clusters/{uuid}"), None, &[], None)
            .await
            .status,
        200
    );
    browser.click("#delete-cluster").await;
    browser.click("dialog[open] button[type=submit]").await;
    browser
        .wait_for_text("#cluster-status", "DELETED", 240)
        .await;
    assert_eq!(
        browser
            .execute("return window.__dashboardMarker;", json!([]))
            .await,
        json!("before delete")
    );
    assert_eq!(
        app.send("GET", &format!("/v1/clusters/{uuid}"), None, &[], None)
            .await
            .status,
        404
    );
    assert_eq!(leftovers(&uuid), Vec::<String>::new());
    browser.quit().await;
}

/// A user of the test Keystone with the member role in two projects, deleted on drop.
struct TwoProjectUser {
    auth_url: String,
    admin_token: String,
    id: String,
    name: String,
    password: String,
}

impl TwoProjectUser {
    async fn create(fixture: &Fixture, projects: &[&str]) -> Self {
        let admin_token = fixture.token("admin").await;
        let auth_url = fixture.auth_url().to_owned();
        let client = reqwest::Client::new();
        let name = format!("dashboard-{}", uuid::Uuid::new_v4().simple());
        let password = "dashboard-test-password".to_owned();
        let created: Value = client
            .post(format!("{auth_url}/users"))
            .header("X-Auth-Token", &admin_token)
            .json(&json!({"user": {"name": name, "password": password, "domain_id": "default"}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = created["user"]["id"].as_str().expect("a user").to_owned();
        let roles: Value = client
            .get(format!("{auth_url}/roles?name=member"))
            .header("X-Auth-Token", &admin_token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let member = roles["roles"][0]["id"]
            .as_str()
            .expect("the member role")
            .to_owned();
        for project in projects {
            let granted = client
                .put(format!(
                    "{auth_url}/projects/{project}/users/{id}/roles/{member}"
                ))
                .header("X-Auth-Token", &admin_token)
                .send()
                .await
                .unwrap();
            assert!(granted.status().is_success(), "{}", granted.status());
        }
        Self {
            auth_url,
            admin_token,
            id,
            name,
            password,
        }
    }

    async fn delete(self) {
        reqwest::Client::new()
            .delete(format!("{}/users/{}", self.auth_url, self.id))
            .header("X-Auth-Token", &self.admin_token)
            .send()
            .await
            .unwrap();
    }
}

async fn log_in(browser: &Browser, user: &str, password: &str) {
    let form = "main form";
    browser.find(&control(form, "username"), 60).await;
    browser.fill(&control(form, "username"), user).await;
    browser.fill(&control(form, "password"), password).await;
    browser.click(&format!("{form} button[type=submit]")).await;
}

/// The cookies the browser holds for the dashboard, as a `Cookie` header.
async fn cookie_header(browser: &Browser) -> (String, Vec<Value>) {
    let cookies = browser.command("GET", "/cookie", None).await.unwrap();
    let list = cookies.as_array().cloned().unwrap_or_default();
    let header = list
        .iter()
        .map(|cookie| {
            format!(
                "{}={}",
                cookie["name"].as_str().unwrap(),
                cookie["value"].as_str().unwrap()
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    (header, list)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keystone_log_in_projects_csrf_and_log_out_in_the_browser() {
    let fixture = Fixture::load();
    let (app, _driver) =
        TestApp::spawn_scripted_with(engines()[0], |config| fixture.configure(config, 5)).await;
    let shots = screenshots();
    let alpha = fixture.user("alpha-member")["project_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let beta = fixture.user("beta-member")["project_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // beta's cluster, made through the API.
    let beta_token = fixture.token("beta-member").await;
    let template = call(
        &app,
        "POST",
        "/v1/clustertemplates",
        &beta_token,
        Some(json!({"name": "beta-template", "coe": "swarm-mode", "image_id": "scripted-image",
            "flavor_id": "s.small", "master_flavor_id": "s.small", "external_network_id": "public"})),
    )
    .await;
    assert_eq!(
        template.status,
        201,
        "{}",
        String::from_utf8_lossy(&template.raw)
    );
    let created = call(
        &app,
        "POST",
        "/v1/clusters",
        &beta_token,
        Some(
            json!({"cluster_template_id": "beta-template", "name": "beta-secret", "node_count": 1}),
        ),
    )
    .await;
    assert_eq!(
        created.status,
        202,
        "{}",
        String::from_utf8_lossy(&created.raw)
    );
    let beta_cluster = created.body["uuid"].as_str().unwrap().to_owned();

    let browser = Browser::start(WIDE.0, WIDE.1).await;
    let dashboard = format!("{}/dashboard/", app.base_url);
    browser.goto(&dashboard).await;
    // Without a session: the login page.
    browser.wait_for_text("main h1", "Log in", 60).await;
    assert!(browser.current_url().await.ends_with("#/login"));
    browser.screenshot(&shots.join("login.png")).await;
    assert_labelled(&browser, "the login form").await;
    // A wrong password: Keystone's refusal is shown, the password field emptied.
    log_in(&browser, "alpha-member", "not-the-password").await;
    browser
        .wait_until(
            "the login error",
            "const box = document.querySelector('main .form-error'); return box && box.textContent.length > 0;",
            json!([]),
            60,
        )
        .await;
    assert!(browser.current_url().await.ends_with("#/login"));
    assert_eq!(
        browser
            .find(&control("main form", "password"), 5)
            .await
            .property(&browser, "value")
            .await,
        json!("")
    );
    let (_, cookies) = cookie_header(&browser).await;
    assert!(
        cookies.is_empty(),
        "a failed login sets no cookie: {cookies:?}"
    );
    let password = fixture.user("alpha-member")["password"]
        .as_str()
        .unwrap()
        .to_owned();
    log_in(&browser, "alpha-member", &password).await;
    browser.wait_for_text("main h1", "Clusters", 60).await;
    assert_eq!(browser.text("#project-name").await, "magnum-alpha");
    assert_eq!(browser.text("#user-name").await, "alpha-member");
    browser
        .wait_until(
            "the live stream is open",
            "return document.querySelector('#live-indicator').dataset.mode === 'live';",
            json!([]),
            60,
        )
        .await;
    // The session cookie: HttpOnly, SameSite=Strict, not readable by the page's scripts.
    let (cookie, cookies) = cookie_header(&browser).await;
    assert!(!cookies.is_empty());
    for item in &cookies {
        assert_eq!(item["httpOnly"], true, "{item}");
        assert_eq!(item["sameSite"], "Strict", "{item}");
    }
    assert_eq!(
        browser.execute("return document.cookie;", json!([])).await,
        json!("")
    );

    // beta's cluster is nowhere in alpha's dashboard, not even by its uuid, and not with a
    // project header the page adds itself (the session's token decides).
    assert!(!browser.page_text().await.contains("beta-secret"));
    browser
        .goto(&format!("{dashboard}#/clusters/{beta_cluster}"))
        .await;
    browser.wait_for_text("main h1", "Not found", 60).await;
    let listed = browser
        .execute_async(
            "const done = arguments[arguments.length - 1]; \
             fetch('/v1/clusters', {headers: {'X-Project-Id': arguments[0], 'X-Roles': 'admin', \
               'OpenStack-API-Version': 'container-infra latest'}}) \
               .then((response) => response.text().then((text) => done([response.status, text])));",
            json!([beta]),
        )
        .await;
    assert_eq!(listed[0], 200, "{listed}");
    assert!(
        !listed[1].as_str().unwrap().contains(&beta_cluster),
        "{listed}"
    );

    // CSRF: a change without the header is refused, from the page and from outside it, with
    // the session cookie; with it, it goes through (the dashboard's own form below).
    let refused = browser
        .execute_async(
            "const done = arguments[arguments.length - 1]; \
             fetch('/v1/clustertemplates', {method: 'POST', headers: {'Content-Type': 'application/json'}, \
               body: JSON.stringify({coe: 'swarm-mode', image_id: 'scripted-image'})}) \
               .then((response) => response.text().then((text) => done([response.status, text])));",
            json!([]),
        )
        .await;
    assert_eq!(refused[0], 403, "{refused}");
    let envelope: Value = serde_json::from_str(refused[1].as_str().unwrap()).unwrap();
    assert_eq!(envelope["errors"][0]["status"], 403, "{envelope}");
    let plain = reqwest::Client::new();
    for csrf in [None, Some("not-the-token")] {
        let mut request = plain
            .post(format!("{}/v1/clustertemplates", app.base_url))
            .header("Cookie", &cookie)
            .header("Content-Type", "application/json")
            .body(r#"{"coe": "swarm-mode", "image_id": "scripted-image"}"#);
        if let Some(token) = csrf {
            request = request.header("X-CSRF-Token", token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 403, "{csrf:?}");
    }
    let session: Value = plain
        .get(format!("{}/dashboard/session", app.base_url))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(session["auth"], "keystone");
    assert_eq!(session["project"]["id"], json!(alpha));
    assert_eq!(session["user"]["name"], "alpha-member");
    let token = session["csrf_token"].as_str().unwrap();
    let accepted = plain
        .post(format!("{}/v1/clustertemplates", app.base_url))
        .header("Cookie", &cookie)
        .header("X-CSRF-Token", token)
        .header("OpenStack-API-Version", "container-infra latest")
        .header("Content-Type", "application/json")
        .body(r#"{"name": "alpha-plain", "coe": "swarm-mode", "image_id": "scripted-image", "flavor_id": "s.small", "master_flavor_id": "s.small", "external_network_id": "public"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status().as_u16(), 201);
    // The dashboard's own form carries the header.
    browser.goto(&format!("{dashboard}#/templates/new")).await;
    let form = "#template-form";
    browser.find(form, 60).await;
    browser.fill(&control(form, "name"), "alpha-form").await;
    browser
        .fill(&control(form, "image_id"), "scripted-image")
        .await;
    browser.fill(&control(form, "flavor_id"), "s.small").await;
    browser
        .fill(&control(form, "master_flavor_id"), "s.small")
        .await;
    browser
        .fill(&control(form, "external_network_id"), "public")
        .await;
    browser.click(&format!("{form} button[type=submit]")).await;
    browser.wait_for_text("main h1", "alpha-form", 60).await;
    // Rename and clone through the template page.
    browser.click("#rename-template").await;
    browser
        .fill("dialog[open] [name=name]", "alpha-renamed")
        .await;
    browser.click("dialog[open] button[type=submit]").await;
    browser.wait_for_text("main h1", "alpha-renamed", 60).await;
    browser.click("#clone-template").await;
    browser.find("#template-form", 60).await;
    assert_eq!(
        browser
            .find(&control("#template-form", "name"), 5)
            .await
            .property(&browser, "value")
            .await,
        json!("alpha-renamed-copy")
    );
    browser.click("#template-form button[type=submit]").await;
    browser
        .wait_for_text("main h1", "alpha-renamed-copy", 20)
        .await;
    // Delete the copy with its confirmation.
    browser.click("#delete-template").await;
    browser.click("dialog[open] button[type=submit]").await;
    browser
        .wait_for_text("main h1", "Cluster templates", 20)
        .await;
    let alpha_token = fixture.token("alpha-member").await;
    let names: Vec<String> = call(&app, "GET", "/v1/clustertemplates", &alpha_token, None)
        .await
        .body["clustertemplates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|template| template["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(names.contains(&"alpha-renamed".to_owned()), "{names:?}");
    assert!(
        !names.contains(&"alpha-renamed-copy".to_owned()),
        "{names:?}"
    );
    assert!(!names.contains(&"alpha-form".to_owned()), "{names:?}");

    // A cluster of alpha's through the form (the scripted driver finishes at once), then
    // its nodegroups, an upgrade and a CA rotation through the dialogs.
    let templates = call(&app, "GET", "/v1/clustertemplates", &alpha_token, None).await;
    let uuid_of = |name: &str| -> String {
        templates.body["clustertemplates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|template| template["name"] == name)
            .and_then(|template| template["uuid"].as_str())
            .unwrap()
            .to_owned()
    };
    let (renamed, plain_template) = (uuid_of("alpha-renamed"), uuid_of("alpha-plain"));
    browser.goto(&format!("{dashboard}#/clusters/new")).await;
    let form = "#cluster-form";
    browser.find(form, 60).await;
    browser
        .choose(&control(form, "cluster_template_id"), &renamed)
        .await;
    browser.fill(&control(form, "name"), "alpha-c").await;
    browser.fill(&control(form, "node_count"), "1").await;
    browser.click(&format!("{form} button[type=submit]")).await;
    browser.wait_for_text("main h1", "alpha-c", 60).await;
    browser
        .wait_for_text("#cluster-status", "CREATE_COMPLETE", 60)
        .await;
    let cluster_url = browser.current_url().await;
    let cluster = cluster_url.rsplit('/').next().unwrap().to_owned();
    browser.click("#add-nodegroup").await;
    browser.fill("dialog[open] [name=name]", "extra").await;
    browser.fill("dialog[open] [name=node_count]", "2").await;
    browser.click("dialog[open] button[type=submit]").await;
    browser
        .wait_until(
            "the new nodegroup is complete",
            "const row = document.querySelector('tr[data-nodegroup=extra]'); \
             return row !== null && row.textContent.includes('CREATE_COMPLETE');",
            json!([]),
            60,
        )
        .await;
    browser.click("[data-key=delete-extra]").await;
    browser.click("dialog[open] button[type=submit]").await;
    browser
        .wait_until(
            "the nodegroup is gone",
            "return document.querySelector('tr[data-nodegroup=extra]') === null;",
            json!([]),
            60,
        )
        .await;
    browser.click("#upgrade").await;
    browser
        .choose("dialog[open] [name=cluster_template]", &plain_template)
        .await;
    browser.click("dialog[open] button[type=submit]").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let now = call(
            &app,
            "GET",
            &format!("/v1/clusters/{cluster}"),
            &alpha_token,
            None,
        )
        .await;
        if now.body["cluster_template_id"] == json!(plain_template)
            && now.body["status"] == "UPDATE_COMPLETE"
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not upgraded: {}",
            now.body
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    browser
        .wait_for_text("#cluster-status", "UPDATE_COMPLETE", 60)
        .await;
    let authority = |reply: crate::support::Reply| reply.body["pem"].as_str().unwrap().to_owned();
    let before = authority(
        call(
            &app,
            "GET",
            &format!("/v1/certificates/{cluster}"),
            &alpha_token,
            None,
        )
        .await,
    );
    browser.click("#rotate-ca").await;
    browser.click("dialog[open] button[type=submit]").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while authority(
        call(
            &app,
            "GET",
            &format!("/v1/certificates/{cluster}"),
            &alpha_token,
            None,
        )
        .await,
    ) == before
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the CA was not rotated"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    browser
        .wait_until(
            "the rotation in the timeline",
            "return document.querySelector('#timeline').textContent.includes('CARotated');",
            json!([]),
            60,
        )
        .await;

    // Log out: back to the login page, the session and its token gone.
    browser.click("#logout").await;
    browser.wait_for_text("main h1", "Log in", 60).await;
    let after = plain
        .get(format!("{}/dashboard/session", app.base_url))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status().as_u16(), 401);
    let after = plain
        .get(format!("{}/v1/clusters", app.base_url))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status().as_u16(), 401);

    // A user of two projects switches between them; each shows its own clusters only.
    let both = TwoProjectUser::create(&fixture, &[&alpha, &beta]).await;
    log_in(&browser, &both.name, &both.password).await;
    browser.wait_for_text("main h1", "Clusters", 60).await;
    let options = browser
        .execute(
            "return [...document.querySelectorAll('#account select[name=project] option')].map((option) => option.textContent);",
            json!([]),
        )
        .await;
    let mut options: Vec<String> = serde_json::from_value(options).unwrap();
    options.sort();
    assert_eq!(options, vec!["magnum-alpha", "magnum-beta"]);
    browser.choose("#account select[name=project]", &beta).await;
    browser
        .find(&format!("tr[data-uuid=\"{beta_cluster}\"]"), 20)
        .await;
    browser
        .screenshot(&shots.join("clusters-keystone.png"))
        .await;
    browser
        .choose("#account select[name=project]", &alpha)
        .await;
    browser
        .wait_until(
            "beta's cluster gone from the list",
            "return document.querySelector(arguments[0]) === null && document.querySelector('#create-cluster') !== null;",
            json!([format!("tr[data-uuid=\"{beta_cluster}\"]")]),
            60,
        )
        .await;
    browser.click("#logout").await;
    browser.wait_for_text("main h1", "Log in", 60).await;
    browser.quit().await;
    both.delete().await;
    app.stop().await;
}
