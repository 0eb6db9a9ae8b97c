//! `TestApp`: the real magnumd (API + conductor) on port 0 with a fresh database.

use magnum_test_support::{Engine, TestDatabase};
use std::sync::Arc;

use magnum_driver::Driver;
use magnum_test_support::scripted::ScriptedDriver;
use magnumd::{Config, Role, Running};
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::Value;
use sqlx::Connection;

pub use magnum_test_support::engines;

pub struct TestApp {
    pub base_url: String,
    pub database_url: String,
    /// Where audit notifications are written.
    pub notifications: std::path::PathBuf,
    client: reqwest::Client,
    running: Running,
    database: TestDatabase,
    _scratch: tempfile::TempDir,
}

/// A caller: sent as noauth headers.
#[derive(Clone, Copy)]
pub struct Caller {
    pub project_id: &'static str,
    pub user_id: &'static str,
    pub roles: &'static str,
}

pub const ADMIN: Caller = Caller {
    project_id: "p-admin",
    user_id: "u-admin",
    roles: "admin,member,reader",
};
pub const ALICE: Caller = Caller {
    project_id: "p-0001",
    user_id: "u-alice",
    roles: "member,reader",
};
pub const BOB: Caller = Caller {
    project_id: "p-0002",
    user_id: "u-bob",
    roles: "member,reader",
};
pub const READER: Caller = Caller {
    project_id: "p-0001",
    user_id: "u-reader",
    roles: "reader",
};
pub const NOBODY: Caller = Caller {
    project_id: "p-0001",
    user_id: "u-none",
    roles: "",
};

pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub raw: Vec<u8>,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// `errors[0].detail` of an error envelope.
    pub fn detail(&self) -> &str {
        self.body["errors"][0]["detail"]
            .as_str()
            .unwrap_or_default()
    }
}

impl TestApp {
    pub async fn spawn(engine: Engine) -> Self {
        Self::spawn_with(engine, Role::All, |_| {}).await
    }

    pub async fn spawn_with(engine: Engine, role: Role, adjust: impl FnOnce(&mut Config)) -> Self {
        Self::spawn_with_drivers(engine, role, adjust, &[]).await
    }

    /// API and conductor with the scripted test double among the drivers.
    pub async fn spawn_scripted(engine: Engine) -> (Self, Arc<ScriptedDriver>) {
        Self::spawn_scripted_with(engine, |_| {}).await
    }

    pub async fn spawn_scripted_with(
        engine: Engine,
        adjust: impl FnOnce(&mut Config),
    ) -> (Self, Arc<ScriptedDriver>) {
        let driver = ScriptedDriver::shared();
        let drivers: Vec<Arc<dyn Driver>> = vec![driver.clone()];
        let app = Self::spawn_with_drivers(engine, Role::All, adjust, &drivers).await;
        (app, driver)
    }

    pub async fn spawn_with_drivers(
        engine: Engine,
        role: Role,
        adjust: impl FnOnce(&mut Config),
        drivers: &[Arc<dyn Driver>],
    ) -> Self {
        let database = TestDatabase::create(engine).await;
        Self::spawn_on_database(database, role, adjust, drivers).await
    }

    /// A fresh process on a database that already holds state (a restart).
    pub async fn spawn_on(database: TestDatabase, drivers: Vec<Arc<dyn Driver>>) -> Self {
        Self::spawn_on_database(database, Role::All, |_| {}, &drivers).await
    }

    /// A restart whose configuration `adjust` changes last.
    pub async fn spawn_on_with(
        database: TestDatabase,
        adjust: impl FnOnce(&mut Config),
        drivers: &[Arc<dyn Driver>],
    ) -> Self {
        Self::spawn_on_database(database, Role::All, adjust, drivers).await
    }

    async fn spawn_on_database(
        database: TestDatabase,
        role: Role,
        adjust: impl FnOnce(&mut Config),
        drivers: &[Arc<dyn Driver>],
    ) -> Self {
        let engine = database.engine;
        let scratch = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.server.state_dir = Some(scratch.path().to_owned());
        config.notifications.path = Some(scratch.path().join("notifications.jsonl"));
        if role != Role::All {
            let key = scratch.path().join("certificate-key");
            std::fs::write(&key, "11".repeat(32)).unwrap();
            std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
            config.certificates.key_file = Some(key);
        }
        config.drivers.local.authz_binary = Some(std::path::PathBuf::from(env!(
            "CARGO_BIN_EXE_magnum-node-authz"
        )));
        config.conductor.lease = 3;
        config.conductor.poll_interval_ms = 100;
        config.server.listen = "127.0.0.1:0".to_owned();
        config.database.url = Some(database.url.clone());
        config.database.max_connections = 4;
        config.conductor.host = Some(format!("conductor-{}", engine.name()));
        config.conductor.heartbeat_interval = 1;
        adjust(&mut config);
        if role != Role::All {
            let store = magnumd::open_store(&config).await.unwrap();
            store.migrate().await.unwrap();
            store.close().await;
        }
        let running = magnumd::start_with_drivers(&config, role, drivers)
            .await
            .expect("magnumd starts");
        let address = running.address.expect("the API is served");
        Self {
            base_url: format!("http://{address}"),
            database_url: database.url.clone(),
            notifications: config.notifications_path(),
            client: test_client(),
            running,
            database,
            _scratch: scratch,
        }
    }

    /// A conductor-only process on the same database, with the given drivers.
    pub async fn start_peer_conductor(&self, host: &str, drivers: &[Arc<dyn Driver>]) -> Running {
        self.start_peer_conductor_with(host, drivers, |_| {}).await
    }

    /// A peer conductor whose configuration `adjust` changes last.
    pub async fn start_peer_conductor_with(
        &self,
        host: &str,
        drivers: &[Arc<dyn Driver>],
        adjust: impl FnOnce(&mut Config),
    ) -> Running {
        let mut config = Config::default();
        config.certificates.key_file = Some(self.key_file());
        config.database.url = Some(self.database_url.clone());
        config.database.max_connections = 4;
        config.conductor.host = Some(host.to_owned());
        config.conductor.heartbeat_interval = 1;
        config.conductor.lease = 3;
        config.conductor.poll_interval_ms = 100;
        config.notifications.sink = magnumd::config::NotificationSink::None;
        adjust(&mut config);
        magnumd::start_with_drivers(&config, Role::Conductor, drivers)
            .await
            .expect("peer conductor starts")
    }

    /// The key that seals CA keys, for peers on the same database.
    pub fn key_file(&self) -> std::path::PathBuf {
        self._scratch.path().join("certificate-key")
    }

    /// Creates a template served by the scripted driver; returns its body.
    pub async fn create_scripted_template(&self, caller: Caller, extra: Value) -> Value {
        let mut body = serde_json::json!({
            "coe": "swarm-mode",
            "image_id": "scripted-image",
            "flavor_id": "s.small",
            "master_flavor_id": "s.small",
            "external_network_id": "public",
        });
        for (key, value) in extra.as_object().unwrap() {
            body[key] = value.clone();
        }
        let reply = self.post("/v1/clustertemplates", caller, body).await;
        assert_eq!(reply.status, 201, "{}", String::from_utf8_lossy(&reply.raw));
        reply.body
    }

    /// Sends with `OpenStack-API-Version: container-infra <version>`.
    pub async fn send_at(
        &self,
        version: &str,
        method: &str,
        path: &str,
        caller: Caller,
        body: Option<Value>,
    ) -> Reply {
        let header = format!("container-infra {version}");
        self.send(
            method,
            path,
            Some(caller),
            &[("OpenStack-API-Version", header.as_str())],
            body,
        )
        .await
    }

    /// Polls the cluster until `done` holds for its body, at most `seconds`.
    pub async fn wait_for_cluster(
        &self,
        uuid: &str,
        caller: Caller,
        seconds: u64,
        done: impl Fn(&Reply) -> bool,
    ) -> Reply {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
        loop {
            let reply = self
                .send_at(
                    "latest",
                    "GET",
                    &format!("/v1/clusters/{uuid}"),
                    caller,
                    None,
                )
                .await;
            if done(&reply) {
                return reply;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "cluster {uuid} did not get there in {seconds}s; last: {} {}",
                reply.status,
                String::from_utf8_lossy(&reply.raw)
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Waits for a status and returns the cluster.
    pub async fn wait_for_status(&self, uuid: &str, caller: Caller, status: &str) -> Value {
        self.wait_for_cluster(uuid, caller, 20, |reply| reply.body["status"] == status)
            .await
            .body
    }

    /// Stops the service as a crash would: nothing is handed back.
    pub async fn crash(self) -> TestDatabase {
        self.running.abort().await;
        self.database
    }

    /// Another API process on the same database, as in a scaled-out deployment.
    pub async fn start_peer_api(&self) -> (Running, TestApp2) {
        self.start_peer_api_with(|_| {}).await
    }

    /// A peer API process whose configuration `adjust` changes last.
    pub async fn start_peer_api_with(
        &self,
        adjust: impl FnOnce(&mut Config),
    ) -> (Running, TestApp2) {
        let mut config = Config::default();
        config.certificates.key_file = Some(self.key_file());
        config.server.listen = "127.0.0.1:0".to_owned();
        config.database.url = Some(self.database_url.clone());
        config.database.max_connections = 4;
        adjust(&mut config);
        let running = magnumd::start(&config, Role::Api)
            .await
            .expect("peer API starts");
        let base_url = format!("http://{}", running.address.unwrap());
        (
            running,
            TestApp2 {
                base_url,
                client: test_client(),
            },
        )
    }

    pub async fn stop(self) {
        self.running.stop().await;
        self.database.drop_database().await;
    }

    /// Sends a request; `body` is JSON unless it is a string, which is sent as it is.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        caller: Option<Caller>,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Reply {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self
            .client
            .request(method, format!("{}{}", self.base_url, path));
        if let Some(caller) = caller {
            request = request
                .header("X-Project-Id", caller.project_id)
                .header("X-User-Id", caller.user_id)
                .header("X-Roles", caller.roles);
        }
        let mut has_content_type = false;
        for (name, value) in headers {
            has_content_type |= name.eq_ignore_ascii_case("content-type");
            request = request.header(*name, *value);
        }
        match body {
            Some(Value::String(raw)) => {
                if !has_content_type {
                    request = request.header("Content-Type", "application/json");
                }
                request = request.body(raw);
            }
            Some(json) => {
                if !has_content_type {
                    request = request.header("Content-Type", "application/json");
                }
                request = request.body(serde_json::to_vec(&json).unwrap());
            }
            None => {}
        }
        let response = request.send().await.expect("request reaches magnumd");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let raw = response.bytes().await.unwrap().to_vec();
        let body = if raw.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&raw).unwrap_or(Value::Null)
        };
        Reply {
            status,
            headers,
            raw,
            body,
        }
    }

    pub async fn get(&self, path: &str, caller: Caller) -> Reply {
        self.send("GET", path, Some(caller), &[], None).await
    }

    pub async fn post(&self, path: &str, caller: Caller, body: Value) -> Reply {
        self.send("POST", path, Some(caller), &[], Some(body)).await
    }

    pub async fn patch(&self, path: &str, caller: Caller, body: Value) -> Reply {
        self.send("PATCH", path, Some(caller), &[], Some(body))
            .await
    }

    pub async fn delete(&self, path: &str, caller: Caller) -> Reply {
        self.send("DELETE", path, Some(caller), &[], None).await
    }

    /// Creates a swarm-mode template from the default local catalog; returns its body.
    pub async fn create_template(&self, caller: Caller, extra: Value) -> Value {
        let mut body = serde_json::json!({
            "coe": "swarm-mode",
            "image_id": "local-node",
            "flavor_id": "local.small",
            "master_flavor_id": "local.small",
            "external_network_id": "local",
        });
        for (key, value) in extra.as_object().unwrap() {
            body[key] = value.clone();
        }
        let reply = self.post("/v1/clustertemplates", caller, body).await;
        assert_eq!(reply.status, 201, "{}", String::from_utf8_lossy(&reply.raw));
        reply.body
    }

    /// Records a cluster built from the template, as the clusters API will.
    pub async fn insert_cluster_using(&self, template_uuid: &str, project_id: &str) {
        let sql = format!(
            "INSERT INTO cluster (uuid, version, name, project_id, user_id, cluster_template_id, \
             labels, floating_ip_enabled, master_lb_enabled, status, created_at) \
             VALUES ('{}', 1, 'c1', '{project_id}', 'u', '{template_uuid}', '{{}}', 1, 0, \
             'CREATE_IN_PROGRESS', 0)",
            uuid::Uuid::new_v4()
        );
        sqlx::any::install_default_drivers();
        let mut connection = sqlx::AnyConnection::connect(&self.database_url)
            .await
            .unwrap();
        sqlx::query(&sql).execute(&mut connection).await.unwrap();
        connection.close().await.unwrap();
    }
}

/// A second API process: only its address.
pub struct TestApp2 {
    pub base_url: String,
    client: reqwest::Client,
}

impl TestApp2 {
    pub async fn get(&self, path: &str, caller: Caller) -> (u16, Value) {
        let response = self
            .client
            .get(format!("{}{}", self.base_url, path))
            .header("X-Project-Id", caller.project_id)
            .header("X-User-Id", caller.user_id)
            .header("X-Roles", caller.roles)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

/// A client that never reuses a connection magnumd may be closing: magnumd drops a kept-alive
/// connection idle for `api.header_timeout` (30 s), and a request sent on it at that moment
/// is reset. Tests that wait on docker between requests would otherwise race it.
pub fn test_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_idle_timeout(std::time::Duration::from_secs(10))
        .build()
        .expect("a reqwest client")
}

/// The value of one series (`name{labels}`, exactly as exposed) in a `/metrics` text.
pub fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .split(' ')
            .next()?
            .parse()
            .ok()
    })
}
