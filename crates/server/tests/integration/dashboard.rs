//! The dashboard's server side: its files, and the Keystone login whose cookie session is
//! only ever a stand-in for `X-Auth-Token` (with a CSRF header for changes). The pages
//! themselves are driven in a real browser by the browser tests.

use serde_json::{json, Value};

use crate::keystone::Fixture;
use crate::support::{engines, Reply, TestApp, ALICE};

fn cookie_of(reply: &Reply) -> Option<String> {
    reply
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find(|value| value.starts_with("magnum_session="))
        .map(str::to_owned)
}

/// `name=value` of a `Set-Cookie`, as a browser sends it back.
fn sent_back(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

#[tokio::test]
async fn the_page_and_its_files_are_served_compressed_and_cached_by_release() {
    let app = TestApp::spawn(engines()[0]).await;
    let redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}/dashboard", app.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(redirect.status(), 308);
    assert_eq!(redirect.headers()["location"], "/dashboard/");

    let page = app
        .send(
            "GET",
            "/dashboard/",
            None,
            &[("Accept-Encoding", "identity")],
            None,
        )
        .await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("cache-control"), Some("no-cache"));
    assert!(page
        .header("content-security-policy")
        .unwrap()
        .contains("script-src 'self'"));
    let html = String::from_utf8_lossy(&page.raw).into_owned();
    let script = html
        .split('"')
        .find(|part| part.starts_with("./static/") && part.ends_with("/app.js"))
        .unwrap_or_else(|| panic!("no versioned script in the page: {html}"));
    let path = format!("/dashboard/{}", script.trim_start_matches("./"));

    let plain = app.send("GET", &path, None, &[], None).await;
    assert_eq!(plain.status, 200);
    assert!(plain
        .header("content-type")
        .unwrap()
        .starts_with("text/javascript"));
    assert_eq!(
        plain.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    let compressed = app
        .send("GET", &path, None, &[("Accept-Encoding", "gzip, br")], None)
        .await;
    assert_eq!(compressed.header("content-encoding"), Some("gzip"));
    assert_eq!(&compressed.raw[..2], &[0x1f, 0x8b]);
    assert!(compressed.raw.len() < plain.raw.len());
    let etag = plain.header("etag").unwrap().to_owned();
    let again = app
        .send("GET", &path, None, &[("If-None-Match", &etag)], None)
        .await;
    assert_eq!(again.status, 304);
    assert!(again.raw.is_empty());

    // Nothing else is served from under /dashboard, whatever the path says.
    for path in [
        "/dashboard/static/x/%2e%2e%2fCargo.toml",
        "/dashboard/static/x/index.html",
        "/dashboard/static/",
        "/dashboard/app.js",
    ] {
        let reply = app.send("GET", path, None, &[], None).await;
        assert_eq!(reply.status, 404, "{path}");
        assert_eq!(reply.body["errors"][0]["status"], 404, "{path}");
    }
    let posted = app.send("POST", &path, None, &[], Some(json!({}))).await;
    assert_eq!(posted.status, 404);
    app.stop().await;
}

#[tokio::test]
async fn without_keystone_the_session_is_noauths_identity_and_there_is_no_login() {
    let app = TestApp::spawn(engines()[0]).await;
    let session = app
        .send("GET", "/dashboard/session", Some(ALICE), &[], None)
        .await;
    assert_eq!(session.status, 200);
    assert_eq!(session.body["auth"], "noauth");
    assert_eq!(session.body["project"]["id"], ALICE.project_id);
    assert_eq!(session.header("cache-control"), Some("no-store"));
    let login = app
        .send(
            "POST",
            "/dashboard/session",
            None,
            &[],
            Some(json!({"username": "a", "password": "b"})),
        )
        .await;
    assert_eq!(login.status, 404);
    assert!(cookie_of(&login).is_none());
    // The page is a web page like any other: noauth's browser guard applies to it.
    let rebound = app
        .send(
            "GET",
            "/dashboard/",
            None,
            &[("Host", "attacker.example")],
            None,
        )
        .await;
    assert_eq!(rebound.status, 403);
    app.stop().await;
}

/// A browser of the dashboard: its cookie and CSRF token.
struct Browser<'a> {
    app: &'a TestApp,
    cookie: String,
    csrf: String,
}

impl Browser<'_> {
    async fn send(
        &self,
        method: &str,
        path: &str,
        csrf: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut headers = vec![
            ("Cookie", self.cookie.as_str()),
            ("OpenStack-API-Version", "container-infra latest"),
        ];
        if let Some(csrf) = csrf {
            headers.push(("X-CSRF-Token", csrf));
        }
        self.app.send(method, path, None, &headers, body).await
    }
}

async fn log_in<'a>(app: &'a TestApp, fixture: &Fixture, user: &str) -> Browser<'a> {
    let form = json!({
        "username": user,
        "password": fixture.user(user)["password"],
        "user_domain": "Default",
        "project": fixture.user(user)["project"],
        "project_domain": "Default",
    });
    let reply = app
        .send("POST", "/dashboard/session", None, &[], Some(form))
        .await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.raw));
    let set_cookie = cookie_of(&reply).expect("a session cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    assert!(!set_cookie.contains(fixture.user(user)["password"].as_str().unwrap()));
    assert_eq!(reply.body["auth"], "keystone");
    assert_eq!(reply.body["user"]["name"], user);
    Browser {
        app,
        cookie: sent_back(&set_cookie),
        csrf: reply.body["csrf_token"].as_str().unwrap().to_owned(),
    }
}

fn template(name: &str) -> Value {
    json!({
        "name": name,
        "coe": "swarm-mode",
        "image_id": "scripted-image",
        "flavor_id": "s.small",
        "master_flavor_id": "s.small",
        "external_network_id": "public",
    })
}

#[tokio::test]
async fn a_keystone_session_acts_as_its_user_and_changes_need_the_csrf_token() {
    let fixture = Fixture::load();
    let (app, _driver) = TestApp::spawn_scripted_with(engines()[0], |config| {
        fixture.configure(config, 60);
    })
    .await;

    // Wrong credentials: Magnum's 401 envelope, no cookie.
    let wrong = app
        .send(
            "POST",
            "/dashboard/session",
            None,
            &[],
            Some(json!({"username": "alpha-member", "password": "not-it", "project": ""})),
        )
        .await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.body["errors"][0]["detail"]
        .as_str()
        .unwrap()
        .contains("not right"));
    assert!(cookie_of(&wrong).is_none());
    // Not JSON (what another site's form could post): refused before Keystone is asked.
    let form = app
        .send(
            "POST",
            "/dashboard/session",
            None,
            &[("Content-Type", "application/x-www-form-urlencoded")],
            Some(Value::String("username=a&password=b".to_owned())),
        )
        .await;
    assert_eq!(form.status, 415);
    let elsewhere = app
        .send(
            "POST",
            "/dashboard/session",
            None,
            &[("Origin", "http://attacker.example")],
            Some(json!({"username": "alpha-member", "password": "x"})),
        )
        .await;
    assert_eq!(elsewhere.status, 403);
    let huge = app
        .send(
            "POST",
            "/dashboard/session",
            None,
            &[],
            Some(json!({"username": "a", "password": "x".repeat(20_000)})),
        )
        .await;
    assert_eq!(huge.status, 413);
    let without_session = app.send("GET", "/dashboard/session", None, &[], None).await;
    assert_eq!(without_session.status, 401);

    let alpha = log_in(&app, &fixture, "alpha-member").await;
    let described = alpha.send("GET", "/dashboard/session", None, None).await;
    assert_eq!(described.status, 200);
    assert_eq!(
        described.body["project"]["name"],
        fixture.user("alpha-member")["project"]
    );
    assert_eq!(described.body["csrf_token"], alpha.csrf.as_str());
    let projects = described.body["projects"].as_array().unwrap();
    assert!(projects
        .iter()
        .any(|project| project["id"] == described.body["project"]["id"]));

    // Reads need only the cookie.
    let listed = alpha.send("GET", "/v1/clustertemplates", None, None).await;
    assert_eq!(
        listed.status,
        200,
        "{}",
        String::from_utf8_lossy(&listed.raw)
    );
    // A change without the CSRF header (what a cross-site request would be) is refused
    // and nothing is stored.
    let forged = alpha
        .send(
            "POST",
            "/v1/clustertemplates",
            None,
            Some(template("forged")),
        )
        .await;
    assert_eq!(forged.status, 403);
    assert!(forged.body["errors"][0]["detail"]
        .as_str()
        .unwrap()
        .contains("X-CSRF-Token"));
    let wrong_token = alpha
        .send(
            "POST",
            "/v1/clustertemplates",
            Some("0123"),
            Some(template("forged")),
        )
        .await;
    assert_eq!(wrong_token.status, 403);
    let listed = alpha.send("GET", "/v1/clustertemplates", None, None).await;
    assert!(listed.body["clustertemplates"]
        .as_array()
        .unwrap()
        .iter()
        .all(|template| template["name"] != "forged"));
    // With it, the change is the user's own, under the user's policy.
    let csrf = alpha.csrf.clone();
    let created = alpha
        .send(
            "POST",
            "/v1/clustertemplates",
            Some(&csrf),
            Some(template("from-the-dashboard")),
        )
        .await;
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.raw)
    );
    assert_eq!(created.body["project_id"], described.body["project"]["id"]);
    assert_eq!(created.body["user_id"], described.body["user"]["id"]);
    let uuid = created.body["uuid"].as_str().unwrap().to_owned();

    // Another project's session cannot see it; nor can it switch into a project it has no
    // role on.
    let beta = log_in(&app, &fixture, "beta-member").await;
    let hidden = beta
        .send("GET", &format!("/v1/clustertemplates/{uuid}"), None, None)
        .await;
    assert_eq!(hidden.status, 404);
    let alpha_project = described.body["project"]["id"].as_str().unwrap();
    let beta_csrf = beta.csrf.clone();
    let switch = beta
        .send(
            "POST",
            "/dashboard/session/project",
            Some(&beta_csrf),
            Some(json!({"project_id": alpha_project})),
        )
        .await;
    assert_eq!(
        switch.status,
        403,
        "{}",
        String::from_utf8_lossy(&switch.raw)
    );
    let switch_without_csrf = beta
        .send(
            "POST",
            "/dashboard/session/project",
            None,
            Some(json!({"project_id": alpha_project})),
        )
        .await;
    assert_eq!(switch_without_csrf.status, 403);

    // An altered cookie is no session at all.
    let mut altered = alpha.cookie.clone();
    let last = altered.pop().unwrap();
    altered.push(if last == '0' { '1' } else { '0' });
    let tampered = app
        .send(
            "GET",
            "/v1/clustertemplates",
            None,
            &[
                ("Cookie", &altered),
                ("OpenStack-API-Version", "container-infra latest"),
            ],
            None,
        )
        .await;
    assert_eq!(tampered.status, 401);

    // A project switch (here into the same project: the fixture's users have one each)
    // gives a new token and cookie; the logout below must end both cookies.
    let before_switch = alpha.cookie.clone();
    let switched = alpha
        .send(
            "POST",
            "/dashboard/session/project",
            Some(&csrf),
            Some(json!({"project_id": alpha_project})),
        )
        .await;
    assert_eq!(
        switched.status,
        200,
        "{}",
        String::from_utf8_lossy(&switched.raw)
    );
    let alpha = Browser {
        app: &app,
        cookie: sent_back(&cookie_of(&switched).expect("a new session cookie")),
        csrf: switched.body["csrf_token"].as_str().unwrap().to_owned(),
    };
    assert_ne!(alpha.cookie, before_switch);
    let csrf = alpha.csrf.clone();
    assert_eq!(
        alpha
            .send("GET", "/v1/clustertemplates", None, None)
            .await
            .status,
        200
    );

    // Logout needs the CSRF token, revokes the tokens in Keystone, and the cookies are then
    // worthless (here at once, although tokens are otherwise trusted for 60 s).
    let refused = alpha.send("DELETE", "/dashboard/session", None, None).await;
    assert_eq!(refused.status, 403);
    let logout = alpha
        .send("DELETE", "/dashboard/session", Some(&csrf), None)
        .await;
    assert_eq!(logout.status, 204);
    assert!(cookie_of(&logout).unwrap().contains("Max-Age=0"));
    let after = alpha.send("GET", "/v1/clustertemplates", None, None).await;
    assert_eq!(after.status, 401);
    let session_after = alpha.send("GET", "/dashboard/session", None, None).await;
    assert_eq!(session_after.status, 401);
    // The cookie from before the switch holds the login's token, which the logout revoked
    // with its whole chain; it is checked against Keystone again (not cached: a new token
    // to this process) and refused.
    let old_cookie = app
        .send(
            "GET",
            "/dashboard/session",
            None,
            &[("Cookie", &before_switch)],
            None,
        )
        .await;
    assert_eq!(old_cookie.status, 401);
    // The template is still there for a fresh session of its owner.
    let again = log_in(&app, &fixture, "alpha-member").await;
    let kept = again
        .send("GET", &format!("/v1/clustertemplates/{uuid}"), None, None)
        .await;
    assert_eq!(kept.status, 200);
    app.stop().await;
}

/// A session lives in its sealed cookie, not in the process: a magnumd killed and started
/// again with the same session key still knows the login (reads, and changes with its CSRF
/// token); one started with another key takes the cookie for nothing.
#[tokio::test]
async fn a_session_outlives_a_killed_magnumd_and_ends_with_its_key() {
    let fixture = Fixture::load();
    let keys = tempfile::tempdir().unwrap();
    let key_file = |name: &str| {
        let path = keys.path().join(name);
        magnum_keystore::load_key_file(&path, true).unwrap();
        path
    };
    let (first_key, other_key) = (key_file("session-key"), key_file("other-key"));
    let with_key = |key: std::path::PathBuf| {
        let fixture = &fixture;
        move |config: &mut magnumd::Config| {
            fixture.configure(config, 60);
            config.dashboard.session_key_file = Some(key);
        }
    };
    let driver = magnum_test_support::scripted::ScriptedDriver::shared();
    let drivers: Vec<std::sync::Arc<dyn magnum_driver::Driver>> = vec![driver];
    let app = TestApp::spawn_with_drivers(
        engines()[0],
        magnumd::Role::All,
        with_key(first_key.clone()),
        &drivers,
    )
    .await;
    let before = log_in(&app, &fixture, "alpha-member").await;
    let made = before
        .send(
            "POST",
            "/v1/clustertemplates",
            Some(&before.csrf),
            Some(template("before-the-crash")),
        )
        .await;
    assert_eq!(made.status, 201, "{}", String::from_utf8_lossy(&made.raw));
    let (cookie, csrf) = (before.cookie.clone(), before.csrf.clone());

    let database = app.crash().await;
    let app = TestApp::spawn_on_with(database, with_key(first_key), &drivers).await;
    let after = Browser {
        app: &app,
        cookie: cookie.clone(),
        csrf: csrf.clone(),
    };
    let described = after.send("GET", "/dashboard/session", None, None).await;
    assert_eq!(
        described.status,
        200,
        "{}",
        String::from_utf8_lossy(&described.raw)
    );
    assert_eq!(described.body["user"]["name"], "alpha-member");
    let listed = after.send("GET", "/v1/clustertemplates", None, None).await;
    assert_eq!(listed.status, 200);
    assert_eq!(
        listed.body["clustertemplates"][0]["name"],
        "before-the-crash"
    );
    let renamed = after
        .send(
            "PATCH",
            "/v1/clustertemplates/before-the-crash",
            Some(&csrf),
            Some(json!([{"op": "replace", "path": "/name", "value": "after-the-crash"}])),
        )
        .await;
    assert_eq!(
        renamed.status,
        200,
        "{}",
        String::from_utf8_lossy(&renamed.raw)
    );

    let database = app.crash().await;
    let app = TestApp::spawn_on_with(database, with_key(other_key), &drivers).await;
    let stranger = Browser {
        app: &app,
        cookie,
        csrf,
    };
    for (method, path) in [
        ("GET", "/dashboard/session"),
        ("GET", "/v1/clustertemplates"),
    ] {
        let refused = stranger.send(method, path, None, None).await;
        assert_eq!(refused.status, 401, "{method} {path}");
    }
    app.stop().await;
}

/// A logout ends the session in every API process within a second or two, not only in the
/// one that answered it: a peer process that validated (and cached, for 300 s here) the
/// session's token a moment before refuses the copied cookie and ends the event stream opened
/// with it; a process started after the logout refuses it without asking Keystone.
#[tokio::test]
async fn a_logout_ends_the_session_in_every_api_process() {
    let fixture = Fixture::load();
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("session-key");
    magnum_keystore::load_key_file(&key, true).unwrap();
    let configure = |config: &mut magnumd::Config| {
        fixture.configure(config, 300);
        config.dashboard.session_key_file = Some(key.clone());
        config.events.recheck_token = 1;
    };
    let (app, _driver) = TestApp::spawn_scripted_with(engines()[0], configure).await;
    let (peer, peer_app) = app.start_peer_api_with(configure).await;
    let alpha = log_in(&app, &fixture, "alpha-member").await;
    let client = reqwest::Client::new();
    let on_peer = |base: String, cookie: String| {
        let client = client.clone();
        async move {
            client
                .get(format!("{base}/v1/clustertemplates"))
                .header("Cookie", cookie)
                .header("OpenStack-API-Version", "container-infra latest")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        on_peer(peer_app.base_url.clone(), alpha.cookie.clone()).await,
        200,
        "the peer reads the same session (and caches its token)"
    );
    // A copy of the cookie holds the project's event stream open on the peer.
    let opened = client
        .get(format!("{}/v1/events?watch=true", peer_app.base_url))
        .header("Cookie", alpha.cookie.clone())
        .header("Accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(opened.status(), 200);
    let mut stream = crate::events::Stream::from_response(opened);

    let logout = alpha
        .send("DELETE", "/dashboard/session", Some(&alpha.csrf), None)
        .await;
    assert_eq!(logout.status, 204);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let status = on_peer(peer_app.base_url.clone(), alpha.cookie.clone()).await;
        if status == 401 {
            break;
        }
        assert_eq!(status, 200);
        assert!(
            std::time::Instant::now() < deadline,
            "the peer still honours a logged-out session"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let ended = loop {
        let frame = stream
            .next(std::time::Duration::from_secs(15))
            .await
            .expect("the stream ends with an end event");
        if frame.event == "end" {
            break frame;
        }
    };
    assert_eq!(ended.data["reason"], "token_expired", "{:?}", ended.data);

    // Started after the logout, with Keystone out of reach: the cookie is no session (401),
    // known from the database alone (a token it would have to validate would be a 503).
    let (late, late_app) = app
        .start_peer_api_with(|config| {
            configure(config);
            config.auth.keystone.auth_url = "http://127.0.0.1:9/v3".to_owned();
        })
        .await;
    assert_eq!(
        on_peer(late_app.base_url.clone(), alpha.cookie.clone()).await,
        401,
        "a process started after the logout knows it from its first read"
    );
    late.stop().await;
    peer.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn a_login_while_keystone_is_away_is_a_503_not_a_session() {
    let fixture = Fixture::load();
    let (app, _driver) = TestApp::spawn_scripted_with(engines()[0], |config| {
        fixture.configure(config, 60);
        config.auth.keystone.auth_url = "http://127.0.0.1:9/v3".to_owned();
    })
    .await;
    let reply = app
        .send(
            "POST",
            "/dashboard/session",
            None,
            &[],
            Some(json!({"username": "alpha-member", "password": "x"})),
        )
        .await;
    assert_eq!(reply.status, 503);
    assert!(cookie_of(&reply).is_none());
    app.stop().await;
}
