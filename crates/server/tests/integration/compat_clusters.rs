//! Cluster, nodegroup, quota and stats requests recorded from upstream Magnum 23, replayed
//! against magnumd (scripted driver) on state built to match: same status, same version
//! headers, same body shape, and the same error message.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::compat::{shape_differences, COMPARED_HEADERS};
use crate::support::{TestApp, ALICE};
use magnum_test_support::{engine_tests, Engine};

const CAPTURES: &str = include_str!("../fixtures/upstream-cluster-captures.jsonl");

/// Where the recording and this replay cannot mean the same thing.
fn skipped(label: &str) -> bool {
    // The recording's quota of 3 came from another part of the session.
    label == "cluster create quota exceeded"
}

async fn replay(app: &TestApp) -> Vec<String> {
    app.create_scripted_template(
        ALICE,
        json!({"name": "t", "labels": {"foo": "bar", "kube_tag": "v1"}}),
    )
    .await;
    let create = |name: &str, labels: Value| {
        let body = json!({"cluster_template_id": "t", "name": name, "labels": labels});
        async move {
            let reply = app
                .send_at("latest", "POST", "/v1/clusters", ALICE, Some(body))
                .await;
            assert_eq!(reply.status, 202);
            reply.body["uuid"].as_str().unwrap().to_owned()
        }
    };
    let main = create(
        "k8s-1",
        json!({"foo": "bar", "extra": "x", "kube_tag": "v2"}),
    )
    .await;
    let duplicate = create("k8s-1", json!({})).await;
    let failed = create("k8s-2", json!({"test_fail_on": "create"})).await;
    app.wait_for_status(&main, ALICE, "CREATE_COMPLETE").await;
    app.wait_for_status(&duplicate, ALICE, "CREATE_COMPLETE")
        .await;
    app.wait_for_status(&failed, ALICE, "CREATE_FAILED").await;
    let mut uuids: HashMap<&str, String> = HashMap::new();
    for upstream in [
        "5c792adf-7b16-4e07-ad90-16d0bc060e5b",
        "1a2af0b5-0a09-425a-aec0-a53253c6d76d",
        "bf29b26e-fe0b-4933-855d-00a99704824c",
        "861d0573-1d92-40d5-bdd0-000157e5c6ac",
    ] {
        uuids.insert(upstream, main.clone());
    }
    uuids.insert("840237bb-4fdd-4006-baa7-f776ace8e29b", failed.clone());

    let mut failures = Vec::new();
    for line in CAPTURES.lines() {
        let record: Value = serde_json::from_str(line).unwrap();
        let label = record["label"].as_str().unwrap();
        if skipped(label) {
            continue;
        }
        let index = record["index"].as_u64().unwrap();
        let method = record["method"].as_str().unwrap();
        let mut path = record["path"].as_str().unwrap().to_owned();
        for (theirs, ours) in &uuids {
            path = path.replace(theirs, ours);
        }
        if label == "cluster get failed" {
            path = format!("/v1/clusters/{failed}");
        }
        let headers = record["req_headers"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let roles = headers
            .get("X-Roles")
            .and_then(Value::as_str)
            .unwrap_or("member,reader")
            .to_owned();
        let project = if label.contains("other project") && !label.starts_with("stats") {
            "p-0002"
        } else {
            "p-0001"
        };
        let mut sent: Vec<(String, String)> = headers
            .iter()
            .filter(|(name, _)| name.as_str() != "X-Roles")
            .map(|(name, value)| (name.clone(), value.as_str().unwrap_or_default().to_owned()))
            .collect();
        sent.push(("X-Project-Id".to_owned(), project.to_owned()));
        sent.push(("X-User-Id".to_owned(), "u-alice".to_owned()));
        sent.push(("X-Roles".to_owned(), roles));
        if label.contains("accept json") {
            sent.push(("Accept".to_owned(), "application/json".to_owned()));
        }
        let header_refs: Vec<(&str, &str)> = sent
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        let mut body = record
            .get("req_body")
            .cloned()
            .filter(|body| !body.is_null());
        // The recording's nodegroup flavor is the upstream catalog's.
        if let Some(Value::Object(object)) = &mut body {
            if object.get("flavor_id") == Some(&json!("g1")) {
                object.insert("flavor_id".to_owned(), json!("s.small"));
            }
        }
        let reply = app.send(method, &path, None, &header_refs, body).await;
        let expected_status = record["status"].as_u64().unwrap() as u16;
        let context = format!("#{index} {label} ({method} {path})");
        if reply.status != expected_status {
            failures.push(format!(
                "{context}: status {} where upstream has {expected_status}: {}",
                reply.status,
                String::from_utf8_lossy(&reply.raw)
            ));
            continue;
        }
        let recorded_headers = record["resp_headers"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        for name in COMPARED_HEADERS {
            let theirs = recorded_headers
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .and_then(|(_, value)| value.as_str());
            if let Some(theirs) = theirs {
                if reply.header(name) != Some(theirs) {
                    failures.push(format!(
                        "{context}: header {name} {:?} where upstream has {theirs:?}",
                        reply.header(name)
                    ));
                }
            }
        }
        let theirs = &record["resp_body"];
        if expected_status >= 400 {
            let mut expected_detail = theirs["errors"][0]["detail"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            for (upstream, ours) in &uuids {
                expected_detail = expected_detail.replace(upstream, ours);
            }
            if reply.detail() != expected_detail {
                failures.push(format!(
                    "{context}: detail {:?} where upstream has {expected_detail:?}",
                    reply.detail()
                ));
            }
        }
        let mut differences = Vec::new();
        shape_differences(&reply.body, theirs, "body", &mut differences);
        for difference in differences {
            failures.push(format!("{context}: {difference}"));
        }
    }
    failures
}

engine_tests!(upstream_cluster_captures_replay_with_the_same_shapes_and_messages);
async fn upstream_cluster_captures_replay_with_the_same_shapes_and_messages(engine: Engine) {
    let (app, _driver) = TestApp::spawn_scripted(engine).await;
    let failures = replay(&app).await;
    assert!(
        failures.is_empty(),
        "{}: {} differences:\n{}",
        engine.name(),
        failures.len(),
        failures.join("\n")
    );
    app.stop().await;
}
