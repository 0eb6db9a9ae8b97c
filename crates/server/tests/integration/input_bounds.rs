//! Bounds on what one request can make the service store or read back: request bodies,
//! labels (templates, clusters, nodegroups, node labels and taints) and health reasons;
//! and NUL characters that only appear once a Python-literal patch value is decoded.
//! Each refusal is a 4xx in Magnum's envelope and leaves everything stored as it was.

use serde_json::{json, Map, Value};

use crate::support::{Reply, TestApp, ALICE};
use magnum_test_support::{engine_tests, Engine};

const NUL_REFUSED: &str =
    "Invalid input: the request contains a NUL character, which no attribute may hold.";

/// `count` labels `<prefix>0`, `<prefix>1`, … with the value `v`.
fn labels(prefix: &str, count: usize) -> Value {
    let labels: Map<String, Value> = (0..count)
        .map(|index| (format!("{prefix}{index}"), json!("v")))
        .collect();
    Value::Object(labels)
}

/// A Python-literal dict string of `count` labels, as `replace` patches carry them.
fn python_labels(count: usize) -> String {
    let items: Vec<String> = (0..count).map(|index| format!("'n{index}': 'v'")).collect();
    format!("{{{}}}", items.join(", "))
}

/// A refusal with this status and detail, in Magnum's envelope.
fn assert_refused(reply: &Reply, status: u16, detail: &str, context: &str) {
    assert_eq!(
        (reply.status, reply.detail()),
        (status, detail),
        "{context}: {}",
        String::from_utf8_lossy(&reply.raw)
    );
    assert_eq!(reply.body["errors"][0]["code"], "client", "{context}");
    assert_eq!(reply.body["errors"][0]["status"], status, "{context}");
    assert!(
        reply.header("x-openstack-request-id").is_some(),
        "{context}"
    );
}

const TOO_MANY: &str =
    "Invalid input for field/attribute labels. There are 129 labels; at most 128 are allowed.";

engine_tests!(
    bodies_and_template_labels_past_their_bounds_are_refused_and_nothing_changes,
    multi_thread
);
async fn bodies_and_template_labels_past_their_bounds_are_refused_and_nothing_changes(
    engine: Engine,
) {
    let name = engine.name();
    let app = TestApp::spawn(engine).await;
    let template = app
        .create_template(ALICE, json!({"name": "full", "labels": labels("k", 128)}))
        .await;
    let path = format!(
        "/v1/clustertemplates/{}",
        template["uuid"].as_str().unwrap()
    );
    let before = app.get(&path, ALICE).await.body;
    let listed_before = app.get("/v1/clustertemplates/detail", ALICE).await.body;

    // Bodies: upstream's 112 KiB, refused before they are parsed.
    let oversized = json!({"coe": "swarm-mode", "image_id": "local-node",
        "labels": {"big": "x".repeat(115 * 1024)}});
    let reply = app.post("/v1/clustertemplates", ALICE, oversized).await;
    assert_refused(
        &reply,
        413,
        "Request is too large. Larger than max_request_body_size (114688).",
        name,
    );
    let patch = json!([{"op": "add", "path": "/labels/big", "value": "x".repeat(115 * 1024)}]);
    assert_eq!(app.patch(&path, ALICE, patch).await.status, 413, "{name}");
    // Just under the cap, a body is read: its labels are then what is refused.
    let under = json!({"coe": "swarm-mode", "image_id": "local-node",
        "labels": {"big": "x".repeat(100 * 1024)}});
    let reply = app.post("/v1/clustertemplates", ALICE, under).await;
    assert_refused(
        &reply,
        400,
        "Invalid input for field/attribute labels. The value of label 'big' has 102400 characters; at most 4096 are allowed.",
        name,
    );

    // Labels on create: count, key length, value length, size.
    for (labels, detail) in [
        (labels("k", 129), TOO_MANY.to_owned()),
        (
            json!({"k".repeat(256): "v"}),
            format!(
                "Invalid input for field/attribute labels. The label key '{}...' has 256 characters; at most 255 are allowed.",
                "k".repeat(64)
            ),
        ),
        (
            json!({"k": "v".repeat(4097)}),
            "Invalid input for field/attribute labels. The value of label 'k' has 4097 characters; at most 4096 are allowed.".to_owned(),
        ),
    ] {
        let body = json!({"coe": "swarm-mode", "image_id": "local-node", "labels": labels});
        let reply = app.post("/v1/clustertemplates", ALICE, body).await;
        assert_refused(&reply, 400, &detail, name);
    }
    let large: Map<String, Value> = (0..17)
        .map(|index| (format!("k{index}"), json!("v".repeat(4000))))
        .collect();
    let body = json!({"coe": "swarm-mode", "image_id": "local-node", "labels": large});
    let reply = app.post("/v1/clustertemplates", ALICE, body).await;
    assert_eq!(reply.status, 400, "{name}");
    assert!(
        reply
            .detail()
            .ends_with("bytes as JSON; at most 65535 are allowed."),
        "{}",
        reply.detail()
    );

    // Labels on update: one more than the bound, whichever way it comes.
    for operation in [
        json!({"op": "add", "path": "/labels/k128", "value": "v"}),
        json!({"op": "replace", "path": "/labels", "value": python_labels(129)}),
    ] {
        let reply = app.patch(&path, ALICE, json!([operation])).await;
        assert_refused(&reply, 400, TOO_MANY, name);
    }
    let reply = app
        .patch(
            &path,
            ALICE,
            json!([{"op": "replace", "path": "/labels/k0", "value": "v".repeat(4097)}]),
        )
        .await;
    assert_eq!(reply.status, 400, "{name}");

    assert_eq!(app.get(&path, ALICE).await.body, before, "{name}");
    assert_eq!(
        app.get("/v1/clustertemplates/detail", ALICE).await.body,
        listed_before,
        "{name}"
    );
    app.stop().await;
}

engine_tests!(
    cluster_and_nodegroup_labels_and_health_reasons_are_bounded_and_nul_is_refused,
    multi_thread
);
async fn cluster_and_nodegroup_labels_and_health_reasons_are_bounded_and_nul_is_refused(
    engine: Engine,
) {
    let name = engine.name();
    let (app, _driver) = TestApp::spawn_scripted(engine).await;
    app.create_scripted_template(ALICE, json!({"name": "t", "labels": labels("t", 100)}))
        .await;

    // Cluster create: the given labels, and the merged ones.
    for body in [
        json!({"cluster_template_id": "t", "name": "c1", "labels": labels("c", 129)}),
        json!({"cluster_template_id": "t", "name": "c2", "labels": labels("c", 100), "merge_labels": true}),
    ] {
        let reply = app
            .send_at("latest", "POST", "/v1/clusters", ALICE, Some(body.clone()))
            .await;
        assert_eq!(reply.status, 400, "{name}: {body}");
        assert!(
            reply
                .detail()
                .starts_with("Invalid input for field/attribute labels. There are "),
            "{}",
            reply.detail()
        );
    }
    assert_eq!(
        app.get("/v1/clusters", ALICE).await.body["clusters"],
        json!([]),
        "{name}"
    );

    let reply = app
        .send_at(
            "latest",
            "POST",
            "/v1/clusters",
            ALICE,
            Some(json!({"cluster_template_id": "t", "name": "k", "labels": labels("c", 28), "merge_labels": true})),
        )
        .await;
    assert_eq!(reply.status, 202, "{name}: {}", reply.detail());
    let uuid = reply.body["uuid"].as_str().unwrap().to_owned();
    app.wait_for_status(&uuid, ALICE, "CREATE_COMPLETE").await;
    let path = format!("/v1/clusters/{uuid}");
    let nodegroups = format!("{path}/nodegroups");
    let worker = format!("{nodegroups}/default-worker");

    // Health reasons: at most 64 KiB of JSON, however many patches build it.
    let reply = app
        .send_at(
            "latest",
            "PATCH",
            &path,
            ALICE,
            Some(json!([{"op": "add", "path": "/health_status_reason/first", "value": "r".repeat(40_000)}])),
        )
        .await;
    assert_eq!(reply.status, 202, "{name}: {}", reply.detail());
    let cluster_before = app.get(&path, ALICE).await.body;
    for operation in [
        json!({"op": "add", "path": "/health_status_reason/second", "value": "r".repeat(40_000)}),
        json!({"op": "replace", "path": "/health_status_reason", "value": format!("{{'a': '{}'}}", "r".repeat(70_000))}),
    ] {
        let reply = app
            .send_at("latest", "PATCH", &path, ALICE, Some(json!([operation])))
            .await;
        assert_eq!(reply.status, 400, "{name}");
        assert!(
            reply
                .detail()
                .starts_with("Invalid input for field/attribute health_status_reason. It takes ")
                && reply
                    .detail()
                    .ends_with("bytes as JSON; at most 65535 are allowed."),
            "{}",
            reply.detail()
        );
        assert_eq!(reply.body["errors"][0]["code"], "client");
    }
    assert_eq!(app.get(&path, ALICE).await.body, cluster_before, "{name}");

    // Nodegroups: labels on create, node labels and taints on create and update.
    let worker_before = app
        .send_at("latest", "GET", &worker, ALICE, None)
        .await
        .body;
    let listed_before = app
        .send_at("latest", "GET", &nodegroups, ALICE, None)
        .await
        .body;
    let taints: Vec<Value> = (0..129)
        .map(|_| json!({"key": "k", "effect": "NoSchedule"}))
        .collect();
    for (body, status, detail) in [
        (json!({"name": "ng", "labels": labels("n", 129)}), 400, TOO_MANY.to_owned()),
        (
            json!({"name": "ng", "labels": labels("n", 100), "merge_labels": true}),
            400,
            "Invalid input for field/attribute labels. There are 228 labels; at most 128 are allowed.".to_owned(),
        ),
        (
            json!({"name": "ng", "node_labels": labels("n", 129)}),
            409,
            "node_labels for ng is invalid (there are 129 labels; at most 128 are allowed).".to_owned(),
        ),
        (
            json!({"name": "ng", "node_taints": taints}),
            409,
            "node_taints for ng is invalid (there are 129 taints; at most 128 are allowed).".to_owned(),
        ),
    ] {
        let reply = app
            .send_at("latest", "POST", &nodegroups, ALICE, Some(body))
            .await;
        assert_refused(&reply, status, &detail, name);
    }
    for (operation, status, detail) in [
        (
            json!({"op": "replace", "path": "/node_labels", "value": python_labels(129)}),
            409,
            "node_labels for default-worker is invalid (there are 129 labels; at most 128 are allowed).",
        ),
        // Values that reach `docker node update`: NUL only once decoded.
        (
            json!({"op": "replace", "path": "/node_labels", "value": r"{'x': 'a\x00b'}"}),
            400,
            NUL_REFUSED,
        ),
        (
            json!({"op": "replace", "path": "/node_labels", "value": r"{'x\0': 'b'}"}),
            400,
            NUL_REFUSED,
        ),
        (
            json!({"op": "replace", "path": "/node_taints", "value": r"[{'key': 'k\u0000', 'effect': 'NoSchedule'}]"}),
            400,
            NUL_REFUSED,
        ),
        (
            json!({"op": "replace", "path": "/node_labels", "value": r"{'x': '\N{BOGUS}'}"}),
            400,
            r#"Couldn't apply patch '[{'path': '/node_labels', 'op': 'replace', 'value': "{'x': '\\N{BOGUS}'}"}]'. Reason: (unicode error) 'unicodeescape' codec can't decode bytes in position 0-8: unknown Unicode character name (<unknown>, line 1)"#,
        ),
    ] {
        let reply = app
            .send_at("latest", "PATCH", &worker, ALICE, Some(json!([operation])))
            .await;
        assert_refused(&reply, status, detail, name);
    }
    assert_eq!(
        app.send_at("latest", "GET", &worker, ALICE, None)
            .await
            .body,
        worker_before,
        "{name}"
    );
    assert_eq!(
        app.send_at("latest", "GET", &nodegroups, ALICE, None)
            .await
            .body,
        listed_before,
        "{name}"
    );
    assert_eq!(app.get(&path, ALICE).await.body, cluster_before, "{name}");
    app.stop().await;
}
