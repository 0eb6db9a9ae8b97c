//! `GET /metrics`, scraped by a real Prometheus (Debian's `prometheus` package): an API and
//! conductor process, and a conductor-only process through `metrics.listen`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use magnum_test_support::Engine;
use magnumd::{Config, Role};
use serde_json::{json, Value};

use crate::support::{TestApp, ADMIN, ALICE};

/// Debian's Prometheus, or `MAGNUM_TEST_PROMETHEUS`; `None` only when
/// `MAGNUM_TEST_SKIP_PROMETHEUS` is set. A missing binary fails the test.
fn prometheus_binary() -> Option<PathBuf> {
    if std::env::var_os("MAGNUM_TEST_SKIP_PROMETHEUS").is_some() {
        eprintln!("MAGNUM_TEST_SKIP_PROMETHEUS is set: not scraping with Prometheus");
        return None;
    }
    let path = std::env::var_os("MAGNUM_TEST_PROMETHEUS")
        .map_or_else(|| PathBuf::from("/usr/bin/prometheus"), PathBuf::from);
    assert!(
        path.is_file(),
        "Prometheus is not installed at {}: `apt-get install prometheus` (scripts/test installs \
         it), point MAGNUM_TEST_PROMETHEUS at one, or set MAGNUM_TEST_SKIP_PROMETHEUS=1 to skip \
         this test",
        path.display()
    );
    Some(path)
}

fn free_loopback_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A Prometheus answer's `data`, asserting it succeeded.
async fn prometheus_api(client: &reqwest::Client, base: &str, path: &str) -> Value {
    let reply = client
        .get(format!("{base}{path}"))
        .send()
        .await
        .unwrap_or_else(|error| panic!("Prometheus {path}: {error}"));
    let body: Value = reply.json().await.unwrap();
    assert_eq!(body["status"], "success", "{path}: {body}");
    body["data"].clone()
}

/// The value of each series an instant query returns, keyed by the series' labels.
async fn query(client: &reqwest::Client, base: &str, promql: &str) -> Vec<(Value, f64)> {
    let encoded: String = url_encode(promql);
    let data = prometheus_api(client, base, &format!("/api/v1/query?query={encoded}")).await;
    data["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|series| {
            let value = series["value"][1].as_str().unwrap().parse::<f64>().unwrap();
            (series["metric"].clone(), value)
        })
        .collect()
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// Waits until Prometheus has a sample of `promql` whose value `done` takes.
async fn wait_for_query(
    client: &reqwest::Client,
    base: &str,
    promql: &str,
    done: impl Fn(f64) -> bool,
) -> Vec<(Value, f64)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let series = query(client, base, promql).await;
        if !series.is_empty() && series.iter().all(|(_, value)| done(*value)) {
            return series;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never had {promql} as expected; last: {series:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn a_real_prometheus_scrapes_the_api_and_a_conductor_only_process() {
    let Some(prometheus) = prometheus_binary() else {
        return;
    };
    let (app, _driver) = TestApp::spawn_scripted(Engine::Sqlite).await;
    // A conductor-only process on the same database, with its own metrics listener.
    let mut conductor_config = Config::default();
    conductor_config.certificates.key_file = Some(app.key_file());
    conductor_config.database.url = Some(app.database_url.clone());
    conductor_config.database.max_connections = 2;
    conductor_config.conductor.host = Some("metrics-conductor".to_owned());
    conductor_config.notifications.sink = magnumd::config::NotificationSink::None;
    conductor_config.metrics.listen = Some("127.0.0.1:0".to_owned());
    let conductor = magnumd::start(&conductor_config, Role::Conductor)
        .await
        .expect("the conductor starts");
    let conductor_metrics = conductor.metrics_address.expect("metrics.listen is served");
    assert!(conductor.address.is_none());

    // Some traffic: a cluster built, lists, a 404 and paths no route serves.
    app.create_scripted_template(ALICE, json!({"name": "scraped"}))
        .await;
    let created = app
        .post(
            "/v1/clusters",
            ALICE,
            json!({"cluster_template_id": "scraped", "name": "c1", "node_count": 1}),
        )
        .await;
    assert_eq!(
        created.status,
        202,
        "{}",
        String::from_utf8_lossy(&created.raw)
    );
    let uuid = created.body["uuid"].as_str().unwrap().to_owned();
    app.wait_for_status(&uuid, ALICE, "CREATE_COMPLETE").await;
    for _ in 0..3 {
        assert_eq!(app.get("/v1/clusters", ALICE).await.status, 200);
    }
    let missing = uuid::Uuid::new_v4();
    assert_eq!(
        app.get(&format!("/v1/clusters/{missing}"), ALICE)
            .await
            .status,
        404
    );
    assert_eq!(app.get("/no/such/path/at/all", ADMIN).await.status, 404);

    // Read directly: the exposition format, bounded labels.
    let client = reqwest::Client::new();
    let scraped = client
        .get(format!("{}/metrics", app.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(scraped.status(), 200);
    assert_eq!(
        scraped.headers()["content-type"],
        magnum_metrics::CONTENT_TYPE
    );
    let text = scraped.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    for expected in [
        "magnum_http_requests_total{route=\"/v1/clusters\",method=\"GET\",status=\"200\"}",
        "magnum_http_requests_total{route=\"/v1/clusters/{cluster_ident}\",method=\"GET\",status=\"404\"}",
        "magnum_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"}",
        "magnum_operations_total{action=\"create_cluster\",outcome=\"succeeded\"} 1",
        "magnum_clusters{driver=\"scripted\",status=\"CREATE_COMPLETE\",health=\"none\"} 1",
        "magnum_db_pool_max_connections 4",
    ] {
        assert!(text.contains(expected), "missing {expected} in\n{text}");
    }
    for unbounded in [
        uuid.as_str(),
        &missing.to_string(),
        "no/such",
        "p-0001",
        "c1\"",
    ] {
        assert!(!text.contains(unbounded), "{unbounded} in\n{text}");
    }
    // The metrics listener serves nothing else.
    let elsewhere = client
        .get(format!("http://{conductor_metrics}/v1/clusters"))
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), 404);

    // A real Prometheus scrapes both, every second.
    let scratch = tempfile::tempdir().unwrap();
    let api_target = app.base_url.trim_start_matches("http://").to_owned();
    // Written line by line: YAML's indentation matters.
    let configuration = [
        "global:".to_owned(),
        "  scrape_interval: 1s".to_owned(),
        "  scrape_timeout: 1s".to_owned(),
        "scrape_configs:".to_owned(),
        "  - job_name: magnumd".to_owned(),
        "    static_configs:".to_owned(),
        format!("      - targets: ['{api_target}']"),
        "  - job_name: conductor".to_owned(),
        "    static_configs:".to_owned(),
        format!("      - targets: ['{conductor_metrics}']"),
    ]
    .join("\n");
    let configuration_file = scratch.path().join("prometheus.yml");
    std::fs::write(&configuration_file, configuration).unwrap();
    let port = free_loopback_port();
    let log = std::fs::File::create(scratch.path().join("prometheus.log")).unwrap();
    let mut server = tokio::process::Command::new(&prometheus)
        .arg(format!("--config.file={}", configuration_file.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            scratch.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("Prometheus starts");
    let base = format!("http://127.0.0.1:{port}");
    let prometheus_log =
        || std::fs::read_to_string(scratch.path().join("prometheus.log")).unwrap_or_default();

    // Both targets up, as Prometheus's own target list says.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = server.try_wait() {
            panic!("Prometheus exited ({status}):\n{}", prometheus_log());
        }
        let targets = match client.get(format!("{base}/api/v1/targets")).send().await {
            Ok(reply) => reply.json::<Value>().await.unwrap_or_default(),
            Err(_) => Value::Null,
        };
        let active = targets["data"]["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if active.len() == 2 && active.iter().all(|target| target["health"] == "up") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus's targets are not up: {active:?}\n{}",
            prometheus_log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    wait_for_query(&client, &base, "up", |up| up == 1.0).await;

    let requests = wait_for_query(
        &client,
        &base,
        r#"magnum_http_requests_total{job="magnumd",route="/v1/clusters",method="GET",status="200"}"#,
        |count| count >= 3.0,
    )
    .await;
    assert_eq!(requests.len(), 1, "{requests:?}");
    wait_for_query(
        &client,
        &base,
        r#"magnum_http_requests_total{route="unmatched",status="404"}"#,
        |count| count >= 1.0,
    )
    .await;
    let buckets = wait_for_query(
        &client,
        &base,
        r#"magnum_http_request_duration_seconds_bucket{job="magnumd",route="/v1/clusters",method="GET"}"#,
        |count| count >= 0.0,
    )
    .await;
    assert!(buckets.len() >= 10, "{buckets:?}");
    assert!(
        buckets
            .iter()
            .any(|(labels, count)| labels["le"] == "+Inf" && *count >= 3.0),
        "{buckets:?}"
    );
    wait_for_query(
        &client,
        &base,
        r#"magnum_operations_total{job="magnumd",action="create_cluster",outcome="succeeded"}"#,
        |count| count == 1.0,
    )
    .await;
    // Database-wide gauges, from the conductor-only process too.
    wait_for_query(
        &client,
        &base,
        r#"magnum_clusters{job="conductor",status="CREATE_COMPLETE"}"#,
        |count| count == 1.0,
    )
    .await;
    wait_for_query(
        &client,
        &base,
        r#"magnum_operations_pending{job="conductor"}"#,
        |pending| pending == 0.0,
    )
    .await;
    wait_for_query(
        &client,
        &base,
        r#"sum by (job) (magnum_db_pool_connections)"#,
        |open| open >= 1.0,
    )
    .await;
    // Nothing Prometheus stored carries a uuid.
    let names = prometheus_api(&client, &base, "/api/v1/label/route/values").await;
    for route in names.as_array().unwrap() {
        let route = route.as_str().unwrap();
        assert!(
            route == "unmatched" || route.starts_with('/'),
            "route label {route:?}"
        );
        assert!(!route.contains(&uuid) && !route.contains(&missing.to_string()));
    }

    server.kill().await.unwrap();
    conductor.stop().await;
    app.stop().await;
}

/// A measurement, not a check (docs/PERFORMANCE.md): one scrape of an API process over
/// 10,000 clusters and 1,000 pending operations on SQLite, cold (the database read) and warm
/// (within the second), and a storm of concurrent scrapes.
#[tokio::test]
#[ignore = "a measurement: cargo test --release -p magnumd --test integration -- --ignored --nocapture scrape_cost"]
async fn scrape_cost() {
    use sqlx::Connection;
    // The API alone: no conductor takes the pending operations away.
    let driver: std::sync::Arc<dyn magnum_driver::Driver> =
        magnum_test_support::scripted::ScriptedDriver::shared();
    let app = TestApp::spawn_with_drivers(Engine::Sqlite, Role::Api, |_| {}, &[driver]).await;
    let template = app
        .create_scripted_template(ADMIN, json!({"name": "t"}))
        .await;
    let template = template["uuid"].as_str().unwrap().to_owned();
    let mut connection = sqlx::AnyConnection::connect(&app.database_url)
        .await
        .unwrap();
    let statuses = [
        "CREATE_COMPLETE",
        "UPDATE_COMPLETE",
        "CREATE_FAILED",
        "DELETE_IN_PROGRESS",
    ];
    let healths = ["'HEALTHY'", "'UNHEALTHY'", "NULL"];
    for batch in 0..20 {
        let rows: Vec<String> = (0..500)
            .map(|index| {
                let n = batch * 500 + index;
                format!(
                    "('{}', 1, 'c', 'p-{}', 'u', '{template}', '{{}}', 1, 0, '{}', {}, 0)",
                    uuid::Uuid::new_v4(),
                    n % 300,
                    statuses[n % statuses.len()],
                    healths[n % healths.len()],
                )
            })
            .collect();
        let sql = format!(
            "INSERT INTO cluster (uuid, version, name, project_id, user_id, cluster_template_id, \
             labels, floating_ip_enabled, master_lb_enabled, status, health_status, created_at) \
             VALUES {}",
            rows.join(", ")
        );
        sqlx::query(&sql).execute(&mut connection).await.unwrap();
    }
    let rows: Vec<String> = (0..1000)
        .map(|index| {
            format!(
                "('{}', '{}', 'update_cluster', '{{}}', 'pending', 0, {})",
                uuid::Uuid::new_v4(),
                uuid::Uuid::new_v4(),
                1_700_000_000 + index
            )
        })
        .collect();
    let sql = format!(
        "INSERT INTO operation (uuid, cluster_uuid, kind, payload, state, attempts, created_at) \
         VALUES {}",
        rows.join(", ")
    );
    sqlx::query(&sql).execute(&mut connection).await.unwrap();
    connection.close().await.unwrap();
    // Requests of many kinds, for a realistic number of request series.
    for path in [
        "/v1/clusters",
        "/v1/clustertemplates",
        "/v1/mservices",
        "/v1/stats",
        "/nope",
    ] {
        for _ in 0..5 {
            app.get(path, ADMIN).await;
        }
    }

    let client = reqwest::Client::new();
    let url = format!("{}/metrics", app.base_url);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let started = Instant::now();
    let text = client.get(&url).send().await.unwrap().text().await.unwrap();
    let cold = started.elapsed();
    assert!(text.contains("magnum_operations_pending 1000"), "{text}");
    let started = Instant::now();
    let warm_scrapes = 200;
    for _ in 0..warm_scrapes {
        client
            .get(&url)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
    }
    let warm = started.elapsed() / warm_scrapes;
    let started = Instant::now();
    let storm: Vec<_> = (0..64)
        .map(|_| {
            let client = client.clone();
            let url = url.clone();
            tokio::spawn(async move {
                for _ in 0..20 {
                    client
                        .get(&url)
                        .send()
                        .await
                        .unwrap()
                        .bytes()
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for scraper in storm {
        scraper.await.unwrap();
    }
    let storm_time = started.elapsed();
    println!(
        "exposition: {} bytes, {} series lines; cold scrape (database read): {cold:?}; \
         warm scrape: {warm:?}; 64 scrapers x 20 scrapes: {storm_time:?} ({:.0} scrapes/s)",
        text.len(),
        text.lines().filter(|line| !line.starts_with('#')).count(),
        1280.0 / storm_time.as_secs_f64()
    );
    app.stop().await;
}
