//! The OpenAPI document against a real magnumd: served without authentication at
//! `/v1/openapi.json`, an OpenAPI 3.1 document (checked against the meta-schema) whose every
//! operation the server answers, and whose paths answer no other method; and a seeded, bounded
//! run of schemathesis (the property-based API fuzzer from PyPI, installed by `scripts/test`
//! into the ignored `.venv-schemathesis`, or named by `MAGNUM_SCHEMATHESIS`) that must find no
//! server error and no answer the document does not describe. `MAGNUM_SCHEMATHESIS_EXAMPLES`
//! (default 40 per operation) and `MAGNUM_SCHEMATHESIS_SEED` widen or replay the run.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use magnum_test_support::Engine;
use serde_json::{json, Value};

use crate::support::{TestApp, ADMIN};

const METHODS: [&str; 5] = ["get", "post", "patch", "delete", "put"];

/// A path of the document with stand-ins for its parameters.
fn instantiate(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                "stand-in"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn the_document_is_public_and_every_operation_in_it_is_served() {
    let (app, _driver) = TestApp::spawn_scripted(Engine::Sqlite).await;
    // No identity at all: public, like `/` and `/v1`.
    let reply = app.send("GET", "/v1/openapi.json", None, &[], None).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.raw));
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(
        reply.header("openstack-api-version"),
        Some("container-infrastructure-management 1.1")
    );
    let document = reply.body;
    assert_eq!(document["openapi"], "3.1.0");
    assert_eq!(document["servers"][0]["url"], app.base_url.as_str());
    let paths = document["paths"].as_object().unwrap();
    assert!(paths.len() >= 20, "{}", paths.len());
    // The unversioned alias serves it too, and a bad version header is refused as on /v1.
    let alias = app.send("GET", "/openapi.json", None, &[], None).await;
    assert_eq!(alias.body, document);
    let refused = app
        .send(
            "GET",
            "/v1/openapi.json",
            None,
            &[("OpenStack-API-Version", "container-infra 1.99")],
            None,
        )
        .await;
    assert_eq!(refused.status, 406);

    let mut operations = 0;
    for (path, item) in paths {
        let url = instantiate(path);
        for method in METHODS {
            let reply = app
                .send(
                    &method.to_ascii_uppercase(),
                    &url,
                    Some(ADMIN),
                    &[("OpenStack-API-Version", "container-infra latest")],
                    None,
                )
                .await;
            let described = format!("{} {url}: {}", method, String::from_utf8_lossy(&reply.raw));
            match item.get(method) {
                Some(operation) => {
                    operations += 1;
                    // A routing refusal has code "" (an unknown path or method).
                    let routing_refusal =
                        matches!(reply.status, 404 | 405) && reply.body["errors"][0]["code"] == "";
                    assert!(!routing_refusal, "{described}");
                    let documented = operation["responses"]
                        .as_object()
                        .unwrap()
                        .contains_key(&reply.status.to_string());
                    assert!(
                        documented,
                        "{} is not documented for {described}",
                        reply.status
                    );
                }
                // As upstream, PATCH and DELETE on a detail list name a resource "detail".
                None if path.ends_with("/detail") && matches!(method, "patch" | "delete") => {
                    assert_eq!(reply.body["errors"][0]["code"], "client", "{described}");
                }
                None => assert_eq!(reply.status, 405, "{described}"),
            }
        }
    }
    assert!(operations >= 33, "{operations}");
    app.stop().await;
}

/// schemathesis from `scripts/test`'s venv, or `MAGNUM_SCHEMATHESIS`.
fn schemathesis_binary() -> PathBuf {
    if let Ok(path) = std::env::var("MAGNUM_SCHEMATHESIS") {
        return PathBuf::from(path);
    }
    let repository = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let path = repository.join(".venv-schemathesis/bin/schemathesis");
    assert!(
        path.exists(),
        "schemathesis is not installed at {}: run scripts/test, which installs it (or set \
         MAGNUM_SCHEMATHESIS)",
        path.display()
    );
    path
}

/// The served document against the OpenAPI 3.1 meta-schema schemathesis ships (and checks on
/// loading), with the JSON Schema validator of its venv; and a document broken on purpose is
/// refused, so that the check can fail.
async fn meets_the_openapi_3_1_schema(
    schemathesis: &std::path::Path,
    app: &TestApp,
    scratch: &std::path::Path,
) {
    let document = app.send("GET", "/v1/openapi.json", None, &[], None).await;
    let path = scratch.join("openapi.json");
    std::fs::write(&path, &document.raw).unwrap();
    let python = schemathesis.with_file_name("python");
    let script = r#"
import json, sys
import jsonschema_rs
from schemathesis.specs.openapi.definitions import OPENAPI_31
validator = jsonschema_rs.validator_for(OPENAPI_31)
document = json.load(open(sys.argv[1]))
errors = [str(error) for error in validator.iter_errors(document)]
document["paths"]["/v1/clusters"]["get"]["responses"] = "broken"
broken = len(list(validator.iter_errors(document)))
print(json.dumps({"errors": errors, "broken": broken}))
"#;
    let output = tokio::process::Command::new(&python)
        .args(["-c", script])
        .arg(&path)
        .output()
        .await
        .expect("the venv's python runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let verdict: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(verdict["errors"], json!([]), "not OpenAPI 3.1");
    assert!(verdict["broken"].as_u64().unwrap() > 0, "{verdict}");
}

/// The reports: JUnit always (to see what was tested); with `MAGNUM_SCHEMATHESIS_REPORT_DIR`,
/// also an NDJSON record of every request and answer there, to study a run.
fn reports(junit: &std::path::Path) -> Vec<String> {
    let mut arguments = vec![
        "--report-junit-path".to_owned(),
        junit.display().to_string(),
    ];
    match std::env::var("MAGNUM_SCHEMATHESIS_REPORT_DIR") {
        Ok(directory) => arguments.extend([
            "--report".to_owned(),
            "junit,ndjson".to_owned(),
            "--report-dir".to_owned(),
            directory,
        ]),
        Err(_) => arguments.extend(["--report".to_owned(), "junit".to_owned()]),
    }
    arguments
}

/// Resources for the fuzzer's identifiers to find: a template, a cluster with a nodegroup
/// of its own, a quota. Returns values for parameters and body attributes (schemathesis's
/// `path.<name>` and `body.<name>`), which they take half of the time.
async fn seed(app: &TestApp, scratch: &std::path::Path) -> Vec<(&'static str, Vec<String>)> {
    let template = app
        .create_scripted_template(ADMIN, json!({"name": "fuzz-template"}))
        .await;
    let template_uuid = template["uuid"].as_str().unwrap().to_owned();
    let created = app
        .send_at(
            "latest",
            "POST",
            "/v1/clusters",
            ADMIN,
            Some(json!({"cluster_template_id": template_uuid, "name": "fuzz-cluster"})),
        )
        .await;
    assert_eq!(
        created.status,
        202,
        "{}",
        String::from_utf8_lossy(&created.raw)
    );
    let cluster_uuid = created.body["uuid"].as_str().unwrap().to_owned();
    app.wait_for_status(&cluster_uuid, ADMIN, "CREATE_COMPLETE")
        .await;
    let nodegroup = app
        .send_at(
            "latest",
            "POST",
            &format!("/v1/clusters/{cluster_uuid}/nodegroups"),
            ADMIN,
            Some(json!({"name": "fuzz-workers", "node_count": 1})),
        )
        .await;
    assert_eq!(
        nodegroup.status,
        202,
        "{}",
        String::from_utf8_lossy(&nodegroup.raw)
    );
    let quota = app
        .post(
            "/v1/quotas",
            ADMIN,
            json!({"project_id": ADMIN.project_id, "resource": "Cluster", "hard_limit": 50}),
        )
        .await;
    assert_eq!(quota.status, 201, "{}", String::from_utf8_lossy(&quota.raw));
    let templates = vec![template_uuid.clone(), "fuzz-template".to_owned()];
    let clusters = vec![cluster_uuid.clone(), "fuzz-cluster".to_owned()];
    let strings = |values: &[&str]| values.iter().map(|v| (*v).to_owned()).collect::<Vec<_>>();
    vec![
        ("path.clustertemplate_ident", templates.clone()),
        ("path.cluster_ident", clusters.clone()),
        (
            "path.nodegroup_ident",
            vec![
                "fuzz-workers".to_owned(),
                "default-worker".to_owned(),
                nodegroup.body["uuid"].as_str().unwrap().to_owned(),
            ],
        ),
        ("path.project_id", strings(&[ADMIN.project_id])),
        ("path.resource", strings(&["Cluster"])),
        // Without a version header a request is at 1.1, where nodegroups, actions and
        // credentials are 406: recent versions half of the time reach their handlers.
        (
            "header.OpenStack-API-Version",
            strings(&[
                "container-infra latest",
                "container-infra 1.9",
                "container-infra 1.12",
            ]),
        ),
        // What the scripted driver's catalog has, for creates that can succeed.
        ("body.image_id", strings(&["scripted-image"])),
        ("body.coe", strings(&["swarm-mode"])),
        ("body.flavor_id", strings(&["s.small"])),
        ("body.master_flavor_id", strings(&["s.small"])),
        ("body.external_network_id", strings(&["public"])),
        ("body.cluster_template_id", templates.clone()),
        ("body.cluster_template", templates),
        ("body.cluster_uuid", clusters),
        (
            "body.csr",
            vec![crate::certificates::new_csr(scratch, "fuzz")],
        ),
    ]
}

/// `schemathesis.toml`: each seeded parameter or attribute takes a seeded value half of the
/// time, a generated one otherwise.
fn configuration(dictionaries: &[(&str, Vec<String>)]) -> String {
    let name = |key: &str| key.replace(['.', '-'], "_");
    let mut text = String::new();
    for (key, values) in dictionaries {
        text.push_str(&format!(
            "[dictionaries.{}]\nvalues = {}\n\n",
            name(key),
            json!(values)
        ));
    }
    text.push_str("[parameters]\n");
    // An event stream lasts until events.max_stream_duration: not a request to fuzz here.
    text.push_str("\"query.watch\" = \"false\"\n");
    for (key, _) in dictionaries {
        text.push_str(&format!(
            "\"{key}\" = {{ dictionary = \"{}\", probability = 0.5 }}\n",
            name(key)
        ));
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_answer_the_document_does_not_describe() {
    let binary = schemathesis_binary();
    let (app, _driver) = TestApp::spawn_scripted(Engine::Sqlite).await;
    let scratch = tempfile::tempdir().unwrap();
    meets_the_openapi_3_1_schema(&binary, &app, scratch.path()).await;
    let dictionaries = seed(&app, scratch.path()).await;
    let config = scratch.path().join("schemathesis.toml");
    std::fs::write(&config, configuration(&dictionaries)).unwrap();
    let examples = std::env::var("MAGNUM_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "40".into());
    // To study a run: MAGNUM_SCHEMATHESIS_CHECKS names other checks (negative_data_rejection,
    // …), MAGNUM_SCHEMATHESIS_ARGS adds arguments (split at whitespace).
    let checks = std::env::var("MAGNUM_SCHEMATHESIS_CHECKS").unwrap_or_else(|_| {
        "not_a_server_error,status_code_conformance,content_type_conformance,\
         response_headers_conformance,response_schema_conformance"
            .into()
    });
    let extra = std::env::var("MAGNUM_SCHEMATHESIS_ARGS").unwrap_or_default();
    let seed = std::env::var("MAGNUM_SCHEMATHESIS_SEED").unwrap_or_else(|_| "20261126".into());
    let location = format!("{}/v1/openapi.json", app.base_url);
    let report = scratch.path().join("junit.xml");
    let mut command = tokio::process::Command::new(&binary);
    command
        .arg("--config-file")
        .arg(&config)
        .args(["--no-color", "run", &location])
        .args([
            "--checks",
            &checks,
            "--max-examples",
            &examples,
            "--seed",
            &seed,
            // One worker: hypothesis's lambda descriptions are not thread-safe on Python 3.11
            // (ast.parse: "AST constructor recursion depth mismatch").
            "--workers",
            "1",
            "--request-timeout",
            "10",
            "--generation-database",
            "none",
            "--suppress-health-check",
            "all",
            // noauth's identity: an admin, who may reach every route.
            "-H",
            &format!("X-Project-Id: {}", ADMIN.project_id),
            "-H",
            &format!("X-User-Id: {}", ADMIN.user_id),
            "-H",
            &format!("X-Roles: {}", ADMIN.roles),
        ])
        .args(reports(&report))
        .args(extra.split_whitespace())
        .current_dir(scratch.path())
        .kill_on_drop(true);
    let started = std::time::Instant::now();
    let output = tokio::time::timeout(Duration::from_secs(240), command.output())
        .await
        .expect("schemathesis finishes within 240 s")
        .expect("schemathesis runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!(
        "schemathesis ({} s):\n{stdout}\n{stderr}",
        started.elapsed().as_secs()
    );
    assert!(
        output.status.success(),
        "schemathesis found failures:\n{stdout}\n{stderr}"
    );
    // It did test every operation (a document it could not read would test none), but the
    // document itself, which it reads first.
    let junit = std::fs::read_to_string(&report).unwrap();
    let tested: BTreeSet<String> = junit
        .split("<testcase ")
        .skip(1)
        .filter_map(|case| Some(case.split("name=\"").nth(1)?.split('"').next()?.to_owned()))
        .filter(|name| name != "Stateful tests")
        .collect();
    let document: Value = app
        .send("GET", "/v1/openapi.json", None, &[], None)
        .await
        .body;
    let mut operations = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in METHODS {
            if item.get(method).is_some() && path != "/v1/openapi.json" {
                operations.insert(format!("{} {path}", method.to_ascii_uppercase()));
            }
        }
    }
    assert_eq!(tested, operations);
    app.stop().await;
}
