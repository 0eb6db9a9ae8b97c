//! Clusters, nodegroups, quotas and stats against the real service with the scripted
//! test double as driver, on every engine.

use magnum_domain::cluster::HealthStatus;
use serde_json::{json, Value};

use crate::support::{engines, Reply, TestApp, ADMIN, ALICE, BOB, READER};
use magnum_test_support::{engine_tests, Engine};

fn keys(value: &Value) -> Vec<String> {
    let mut keys: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    keys
}

fn sorted(names: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
    names.sort();
    names
}

const SUMMARY_KEYS: [&str; 15] = [
    "uuid",
    "name",
    "cluster_template_id",
    "keypair",
    "docker_volume_size",
    "labels",
    "node_count",
    "master_count",
    "status",
    "health_status",
    "master_flavor_id",
    "flavor_id",
    "create_timeout",
    "links",
    "merge_labels",
];

const DETAIL_EXTRA_KEYS: [&str; 21] = [
    "status_reason",
    "health_status_reason",
    "discovery_url",
    "api_address",
    "coe_version",
    "container_version",
    "project_id",
    "user_id",
    "node_addresses",
    "master_addresses",
    "fixed_network",
    "fixed_subnet",
    "floating_ip_enabled",
    "master_lb_enabled",
    "labels_overridden",
    "labels_added",
    "labels_skipped",
    "created_at",
    "updated_at",
    "cluster_id",
    "stack_id",
];

fn detail_keys(id_key: &str) -> Vec<String> {
    let mut names: Vec<&str> = SUMMARY_KEYS.to_vec();
    names.extend(
        DETAIL_EXTRA_KEYS
            .iter()
            .copied()
            .filter(|key| !["cluster_id", "stack_id"].contains(key)),
    );
    names.push(id_key);
    sorted(&names)
}

async fn create_cluster(app: &TestApp, caller: crate::support::Caller, body: Value) -> String {
    let reply = app
        .send_at("latest", "POST", "/v1/clusters", caller, Some(body))
        .await;
    assert_eq!(reply.status, 202, "{}", String::from_utf8_lossy(&reply.raw));
    assert_eq!(keys(&reply.body), ["uuid"]);
    reply.body["uuid"].as_str().unwrap().to_owned()
}

fn detail(reply: &Reply) -> String {
    reply.detail().to_owned()
}

engine_tests!(a_cluster_is_created_with_its_nodegroups_and_reported_as_upstream_does);
async fn a_cluster_is_created_with_its_nodegroups_and_reported_as_upstream_does(engine: Engine) {
    let (app, driver) = TestApp::spawn_scripted(engine).await;
    let template = app
        .create_scripted_template(
            ALICE,
            json!({"name": "swarm", "labels": {"kube_tag": "v1", "foo": "bar"}, "master_lb_enabled": true, "docker_volume_size": 5}),
        )
        .await;
    let uuid = create_cluster(
        &app,
        ALICE,
        json!({"cluster_template_id": "swarm", "name": "c1", "node_count": 2,
               "labels": {"kube_tag": "v2", "extra": "x"}, "merge_labels": true}),
    )
    .await;
    // Stored before the answer: readable at once.
    let early = app
        .send_at(
            "latest",
            "GET",
            &format!("/v1/clusters/{uuid}"),
            ALICE,
            None,
        )
        .await;
    assert_eq!(early.status, 200, "{}", engine.name());
    assert!(
        ["CREATE_IN_PROGRESS", "CREATE_COMPLETE"].contains(&early.body["status"].as_str().unwrap())
    );
    // Lists served while it is being built must not outlive the build (response cache).
    let listed_early = app
        .send_at("latest", "GET", "/v1/clusters", ALICE, None)
        .await;
    assert_eq!(listed_early.body["clusters"].as_array().unwrap().len(), 1);
    let cluster = app.wait_for_status(&uuid, ALICE, "CREATE_COMPLETE").await;
    let listed = app
        .send_at("latest", "GET", "/v1/clusters", ALICE, None)
        .await;
    assert_eq!(listed.body["clusters"][0]["status"], "CREATE_COMPLETE");
    assert_eq!(listed.body["clusters"][0]["node_count"], 2);
    assert_eq!(
        keys(&cluster),
        detail_keys("cluster_id"),
        "{}",
        engine.name()
    );
    assert_eq!(cluster["node_count"], 2);
    assert_eq!(cluster["master_count"], 1);
    assert_eq!(cluster["cluster_template_id"], template["uuid"]);
    assert_eq!(cluster["docker_volume_size"], 5);
    assert_eq!(cluster["flavor_id"], "s.small");
    assert_eq!(cluster["create_timeout"], 60);
    assert_eq!(cluster["merge_labels"], false);
    assert_eq!(cluster["status_reason"], "Cluster created.");
    assert_eq!(
        cluster["labels"],
        json!({"kube_tag": "v2", "foo": "bar", "extra": "x"})
    );
    assert_eq!(cluster["labels_overridden"], json!({"kube_tag": "v1"}));
    assert_eq!(cluster["labels_added"], json!({"extra": "x"}));
    assert_eq!(cluster["labels_skipped"], json!({}));
    assert_eq!(cluster["node_addresses"].as_array().unwrap().len(), 2);
    assert_eq!(cluster["master_addresses"].as_array().unwrap().len(), 1);
    assert!(cluster["api_address"]
        .as_str()
        .unwrap()
        .starts_with("tcp://"));
    assert!(cluster["cluster_id"]
        .as_str()
        .unwrap()
        .starts_with("scripted-"));
    assert_eq!(cluster["coe_version"], "1.0.0");
    assert_eq!(driver.node_count(uuid.parse().unwrap()), 3);

    // 1.12 and below call it stack_id; lists are summaries.
    let old = app
        .send_at("1.12", "GET", &format!("/v1/clusters/{uuid}"), ALICE, None)
        .await;
    assert_eq!(keys(&old.body), detail_keys("stack_id"));
    let list = app.send_at("1.1", "GET", "/v1/clusters", ALICE, None).await;
    let mut summary: Vec<&str> = SUMMARY_KEYS.to_vec();
    summary.push("stack_id");
    assert_eq!(keys(&list.body["clusters"][0]), sorted(&summary));
    let details = app
        .send_at("latest", "GET", "/v1/clusters/detail", ALICE, None)
        .await;
    assert_eq!(
        keys(&details.body["clusters"][0]),
        detail_keys("cluster_id")
    );
    assert!(details.body["clusters"][0].get("faults").is_none());

    // Nodegroups: the two defaults, settled.
    let nodegroups = app
        .send_at(
            "latest",
            "GET",
            &format!("/v1/clusters/{uuid}/nodegroups"),
            ALICE,
            None,
        )
        .await;
    let items = nodegroups.body["nodegroups"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["name"], "default-master");
    assert_eq!(items[0]["role"], "master");
    assert_eq!(items[1]["name"], "default-worker");
    assert_eq!(items[1]["status"], "CREATE_COMPLETE");
    assert_eq!(
        keys(&items[1]),
        sorted(&[
            "uuid",
            "name",
            "flavor_id",
            "image_id",
            "node_count",
            "role",
            "is_default",
            "status",
            "stack_id",
            "min_node_count",
            "max_node_count",
            "merge_labels"
        ])
    );
    let worker = app
        .send_at(
            "latest",
            "GET",
            &format!("/v1/clusters/{uuid}/nodegroups/default-worker"),
            ALICE,
            None,
        )
        .await;
    assert_eq!(worker.status, 200);
    assert_eq!(worker.body["node_addresses"].as_array().unwrap().len(), 2);
    assert_eq!(worker.body["node_labels"], json!({}));
    assert_eq!(worker.body["node_taints"], json!([]));
    assert_eq!(worker.body["image_id"], "scripted-image");
    // Other projects see nothing; admins see everything; readers read.
    assert_eq!(
        app.get(&format!("/v1/clusters/{uuid}"), BOB).await.status,
        404
    );
    assert_eq!(
        app.get(&format!("/v1/clusters/{uuid}"), ADMIN).await.status,
        200
    );
    assert_eq!(
        app.get(&format!("/v1/clusters/{uuid}"), READER)
            .await
            .status,
        200
    );
    assert_eq!(
        app.get("/v1/clusters", BOB).await.body["clusters"],
        json!([])
    );
    // Audit trail: create pending then success.
    let events = std::fs::read_to_string(&app.notifications).unwrap();
    let outcomes: Vec<(String, String)> = events
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|event| event["payload"]["target"]["id"] == uuid.as_str())
        .map(|event| {
            (
                event["event_type"].as_str().unwrap().to_owned(),
                event["payload"]["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("magnum.cluster.create".to_owned(), "pending".to_owned()),
            ("magnum.cluster.create".to_owned(), "success".to_owned())
        ]
    );
    app.stop().await;
}

engine_tests!(create_refusals_carry_upstream_messages);
async fn create_refusals_carry_upstream_messages(engine: Engine) {
    let (app, _driver) = TestApp::spawn_scripted(engine).await;
    app.create_scripted_template(ALICE, json!({"name": "t"}))
        .await;
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        ("latest", json!({"name": "x"}), 400,
         "Invalid input for field/attribute cluster_template_id. Value: 'None'. Mandatory field missing."),
        ("latest", json!({"cluster_template_id": "t", "name": "1bad"}), 400,
         "Invalid input for field/attribute name. Value: '1bad'. Value should match the pattern ^[a-zA-Z][a-zA-Z0-9_.-]*$"),
        ("latest", json!({"cluster_template_id": "t", "name": ""}), 400,
         "Invalid input for field/attribute name. Value: ''. Value should have a minimum character requirement of 1"),
        ("latest", json!({"cluster_template_id": "t", "master_count": 2}), 400,
         "master nodegroup size of 2 is invalid, size cannot be an even number."),
        ("latest", json!({"cluster_template_id": "t", "master_count": 3}), 400,
         "master_count must be 1 when master_lb_enabled is False"),
        ("1.9", json!({"cluster_template_id": "t", "node_count": 0}), 400,
         "Resizing a nodegroup to zero is not supported in the provided microversion."),
        ("latest", json!({"cluster_template_id": "t", "node_count": -1}), 400,
         "Invalid input for field/attribute node_count. Value: '-1'. Value should be greater or equal to 0"),
        ("latest", json!({"cluster_template_id": "t", "master_count": 0}), 400,
         "Invalid input for field/attribute master_count. Value: '0'. Value should be greater or equal to 1"),
        ("latest", json!({"cluster_template_id": "t", "create_timeout": -5}), 400,
         "Invalid input for field/attribute create_timeout. Value: '-5'. Value should be greater or equal to 0"),
        ("1.9", json!({"cluster_template_id": "nope"}), 400, "ClusterTemplate nope could not be found."),
        ("latest", json!({"cluster_template_id": "nope"}), 404, "ClusterTemplate nope could not be found."),
        ("latest", json!({"cluster_template_id": "t", "bogus": 1}), 400,
         "Unknown attribute for argument cluster: bogus"),
        ("latest", json!({"cluster_template_id": "t", "api_address": "1.2.3.4"}), 400,
         "Invalid input for field/attribute api_address. Value: '1.2.3.4'. Cannot set read only field."),
        ("latest", json!({"cluster_template_id": "t", "flavor_id": "aaa"}), 400, "Unable to find flavor aaa."),
        ("latest", json!({"cluster_template_id": "t", "keypair": "nokey"}), 404, "Unable to find keypair nokey."),
    ];
    for (version, body, status, message) in cases {
        let reply = app
            .send_at(version, "POST", "/v1/clusters", ALICE, Some(body.clone()))
            .await;
        assert_eq!(
            (reply.status, detail(&reply).as_str()),
            (status, message),
            "{} {body}",
            engine.name()
        );
    }
    // Zero workers from 1.10; null master_count means 1 (upstream answers 500).
    create_cluster(
        &app,
        ALICE,
        json!({"cluster_template_id": "t", "node_count": 0, "name": "zero"}),
    )
    .await;
    let uuid = create_cluster(
        &app,
        ALICE,
        json!({"cluster_template_id": "t", "master_count": null, "create_timeout": null, "keypair": "testkey"}),
    )
    .await;
    let cluster = app.get(&format!("/v1/clusters/{uuid}"), ALICE).await.body;
    assert_eq!(cluster["master_count"], 1);
    assert_eq!(cluster["create_timeout"], 60);
    assert_eq!(cluster["keypair"], "testkey");
    assert!(cluster["name"].as_str().unwrap().ends_with("-cluster"));
    // Readers and role-less callers cannot create.
    let reply = app
        .post("/v1/clusters", READER, json!({"cluster_template_id": "t"}))
        .await;
    assert_eq!(reply.status, 403);
    app.stop().await;
}

engine_tests!(scaling_resizing_and_upgrading_go_through_update_states);
async fn scaling_resizing_and_upgrading_go_through_update_states(engine: Engine) {
    let (app, driver) = TestApp::spawn_scripted(engine).await;
    app.create_scripted_template(ALICE, json!({"name": "t1"}))
        .await;
    let second = app
        .create_scripted_template(ALICE, json!({"name": "t2"}))
        .await;
    let uuid = create_cluster(
        &app,
        ALICE,
        json!({"cluster_template_id": "t1", "name": "c"}),
    )
    .await;
    let path = format!("/v1/clusters/{uuid}");
    // Not at rest yet (its creation never ends): refused with the reason.
    let hung = create_cluster(
        &app,
        ALICE,
        json!({"cluster_template_id": "t1", "name": "hung", "labels": {"test_hang_on": "create"}}),
    )
    .await;
    let early = app
        .send_at(
            "latest",
            "PATCH",
            &format!("/v1/clusters/{hung}"),
            ALICE,
            Some(json!([{"op": "replace", "path": "/node_count", "value": 3}])),
        )
        .await;
    assert_eq!(
        (early.status, detail(&early).as_str()),
        (
            400,
            "Updating a cluster when status is \"CREATE_IN_PROGRESS\" is not supported."
        ),
        "{}",
        engine.name()
    );
    app.delete(&format!("/v1/clusters/{hung}"), ALICE).await;
    app.wait_for_status(&uuid, ALICE, "CREATE_COMPLETE").await;
    let cluster_uuid: uuid::Uuid = uuid.parse().unwrap();

    let reply = app
        .send_at(
            "latest",
            "PATCH",
            &path,
            ALICE,
            Some(json!([{"op": "replace", "path": "/node_count", "value": 3}])),
        )
        .await;
    assert_eq!(
        (reply.status, reply.body.clone()),
        (202, json!({"uuid": uuid}))
    );
    let updated = app.wait_for_status(&uuid, ALICE, "UPDATE_COMPLETE").await;
    assert_eq!(updated["node_count"], 3, "{}", engine.name());
    assert_eq!(driver.node_count(cluster_uuid), 4);

    for (patch, message) in [
        (json!([{"op": "replace", "path": "/name", "value": "new"}]), "cannot change cluster property(ies) name."),
        (json!([{"op": "replace", "path": "/master_count", "value": 5}]), "cannot change cluster property(ies) master_count."),
        (json!([{"op": "replace", "path": "/api_address", "value": "x"}]), "'/api_address' is an internal attribute and can not be updated"),
        (json!([{"op": "replace", "path": "/node_count", "value": "3"}]), "Invalid input for field/attribute node_count. Value: '3'. '<' not supported between instances of 'str' and 'int'"),
        (json!([{"op": "add", "path": "/node_count", "value": 2}]), "The attribute /node_count has existed, please use 'replace' operation instead."),
        (json!([{"op": "replace", "path": "/health_status", "value": "BROKEN"}]), "Invalid input for field/attribute health_status. Value: 'BROKEN'. Value should be one of: UNHEALTHY, HEALTHY, UNKNOWN"),
    ] {
        let reply = app.send_at("latest", "PATCH", &path, ALICE, Some(patch)).await;
        assert_eq!((reply.status, detail(&reply).as_str()), (400, message));
    }
    let reply = app
        .send_at(
            "1.2",
            "PATCH",
            &format!("{path}?rollback=True"),
            ALICE,
            Some(json!([])),
        )
        .await;
    assert_eq!(detail(&reply), "Unknown argument: \"rollback\"");
    assert_eq!(
        app.send_at("latest", "PATCH", &path, READER, Some(json!([])))
            .await
            .status,
        403
    );
    // Health alone changes no status.
    let reply = app
        .send_at(
            "latest",
            "PATCH",
            &path,
            ALICE,
            Some(json!([
            {"op": "replace", "path": "/health_status", "value": "UNHEALTHY"},
            {"op": "replace", "path": "/health_status_reason", "value": "{'api': 'down'}"}])),
        )
        .await;
    assert_eq!(reply.status, 202);
    let cluster = app.get(&path, ALICE).await.body;
    assert_eq!(cluster["health_status"], "UNHEALTHY");
    assert_eq!(cluster["health_status_reason"], json!({"api": "down"}));
    assert_eq!(cluster["status"], "UPDATE_COMPLETE");

    // Resize, with the nodes the tenant wants gone.
    let resize = format!("{path}/actions/resize");
    let reply = app
        .send_at(
            "1.6",
            "POST",
            &resize,
            ALICE,
            Some(json!({"node_count": 1})),
        )
        .await;
    assert_eq!(reply.status, 406);
    let victim = updated["node_addresses"][0].as_str().unwrap().to_owned();
    let reply = app
        .send_at("latest", "POST", &resize, ALICE, Some(json!({"node_count": 2, "nodes_to_remove": [victim.clone()], "nodegroup": "default-worker"})))
        .await;
    assert_eq!(
        (reply.status, reply.body.clone()),
        (202, json!({"uuid": uuid}))
    );
    let resized = app.wait_for_status(&uuid, ALICE, "UPDATE_COMPLETE").await;
    assert_eq!(resized["node_count"], 2);
    assert!(!resized["node_addresses"]
        .as_array()
        .unwrap()
        .contains(&json!(victim)));
    for (version, body, status, message) in [
        (
            "latest",
            json!({"node_count": 5, "nodegroup": "default-master"}),
            400,
            "Resizing the master nodegroup is not supported by this driver.",
        ),
        (
            "latest",
            json!({"node_count": 5, "nodegroup": "nope"}),
            404,
            "Nodegroup nope could not be found.",
        ),
        (
            "1.9",
            json!({"node_count": 0}),
            400,
            "Resizing a nodegroup to zero is not supported in the provided microversion.",
        ),
        (
            "latest",
            json!({}),
            400,
            "Invalid input for field/attribute node_count. Value: 'None'. Mandatory field missing.",
        ),
    ] {
        let reply = app
            .send_at(version, "POST", &resize, ALICE, Some(body))
            .await;
        assert_eq!((reply.status, detail(&reply).as_str()), (status, message));
    }
    // Admins do not reach other projects' clusters for resize, as upstream.
    assert_eq!(
        app.send_at(
            "latest",
            "POST",
            &resize,
            ADMIN,
            Some(json!({"node_count": 1}))
        )
        .await
        .status,
        404
    );

    // Upgrade to the second template.
    let upgrade = format!("{path}/actions/upgrade");
    let reply = app
        .send_at(
            "1.7",
            "POST",
            &upgrade,
            ALICE,
            Some(json!({"cluster_template": "t2"})),
        )
        .await;
    assert_eq!(
        detail(&reply),
        "Cluster upgrade is not supported in the provided microversion."
    );
    let reply = app
        .send_at(
            "latest",
            "POST",
            &upgrade,
            ALICE,
            Some(json!({"max_batch_size": 1})),
        )
        .await;
    assert_eq!(reply.status, 400);
    let reply = app
        .send_at(
            "latest",
            "POST",
            &upgrade,
            ALICE,
            Some(json!({"cluster_template": "nope"})),
        )
        .await;
    assert_eq!(
        (reply.status, detail(&reply).as_str()),
        (404, "ClusterTemplate nope could not be found.")
    );
    let reply = app
        .send_at(
            "latest",
            "POST",
            &upgrade,
            ALICE,
            Some(json!({"cluster_template": "t2", "max_batch_size": null})),
        )
        .await;
    assert_eq!(
        (reply.status, reply.body.clone()),
        (202, json!({"uuid": uuid}))
    );
    let upgraded = app.wait_for_status(&uuid, ALICE, "UPDATE_COMPLETE").await;
    assert_eq!(upgraded["cluster_template_id"], second["uuid"]);
    // Not at rest (its upgrade never ends): a second upgrade is refused synchronously.
    let busy = create_cluster(
        &app,
        ALICE,
        json!({"cluster_template_id": "t1", "name": "busy", "labels": {"test_hang_on": "upgrade"}}),
    )
    .await;
    app.wait_for_status(&busy, ALICE, "CREATE_COMPLETE").await;
    let busy_upgrade = format!("/v1/clusters/{busy}/actions/upgrade");
    let first = app
        .send_at(
            "latest",
            "POST",
            &busy_upgrade,
            ALICE,
            Some(json!({"cluster_template": "t2"})),
        )
        .await;
    assert_eq!(first.status, 202, "{}", String::from_utf8_lossy(&first.raw));
    let again = app
        .send_at(
            "latest",
            "POST",
            &busy_upgrade,
            ALICE,
            Some(json!({"cluster_template": "t2"})),
        )
        .await;
    assert_eq!(
        (again.status, detail(&again).as_str()),
        (
            400,
            "Upgrading a cluster when status is \"UPDATE_IN_PROGRESS\" is not supported."
        ),
        "{}",
        engine.name()
    );
    app.delete(&format!("/v1/clusters/{busy}"), ALICE).await;
    app.stop().await;
}

engine_tests!(failures_name_their_cause_and_can_be_retried_rolled_back_or_deleted);
async fn failures_name_their_cause_and_can_be_retried_rolled_back_or_deleted(engine: Engine) {
    let (app, driver) = TestApp::spawn_scripted(engine).await;
    app.create_scripted_template(ALICE, json!({"name": "t"}))
        .await;
    // A failed create, with faults.
    let failed = create_cluster(
        &app,
        ALICE,
        json!({"cluster_template_id": "t", "name": "f", "labels": {"test_fail_on": "create"}}),
    )
    .await;
    let cluster = app.wait_for_status(&failed, ALICE, "CREATE_FAILED").await;
    assert_eq!(
        cluster["status_reason"],
        "The scripted driver was told to fail on create."
    );
    assert_eq!(
        cluster["faults"],
        json!({"default-master": "The scripted driver was told to fail on create.",
               "default-worker": "The scripted driver was told to fail on create."})
    );
    assert!(
        app.get("/v1/clusters/detail", ALICE).await.body["clusters"][0]
            .get("faults")
            .is_none()
    );
    // A failed create can be deleted.
    assert_eq!(
        app.delete(&format!("/v1/clusters/{failed}"), ALICE)
            .await
            .status,
        204
    );
    app.wait_for_cluster(&failed, ALICE, 20, |reply| reply.status == 404)
        .await;

    // A failing scale: UPDATE_FAILED, the count put back; with rollback: ROLLBACK_COMPLETE.
    let uuid = create_cluster(
        &app,
        ALICE,
        json!({"cluster_template_id": "t", "name": "s", "labels": {"test_fail_on": "scale", "test_fail_times": "2"}}),
    )
    .await;
    app.wait_for_status(&uuid, ALICE, "CREATE_COMPLETE").await;
    let path = format!("/v1/clusters/{uuid}");
    let scale = json!([{"op": "replace", "path": "/node_count", "value": 2}]);
    assert_eq!(
        app.send_at("latest", "PATCH", &path, ALICE, Some(scale.clone()))
            .await
            .status,
        202
    );
    let cluster = app.wait_for_status(&uuid, ALICE, "UPDATE_FAILED").await;
    assert_eq!(
        cluster["status_reason"],
        "The scripted driver was told to fail on scale."
    );
    assert_eq!(cluster["node_count"], 1);
    assert_eq!(
        cluster["faults"]["default-worker"],
        "The scripted driver was told to fail on scale."
    );
    // Retried from UPDATE_FAILED, this time rolling back.
    let reply = app
        .send_at(
            "latest",
            "PATCH",
            &format!("{path}?rollback=True"),
            ALICE,
            Some(scale),
        )
        .await;
    assert_eq!(reply.status, 202);
    let cluster = app.wait_for_status(&uuid, ALICE, "ROLLBACK_COMPLETE").await;
    assert_eq!(cluster["node_count"], 1);
    assert_eq!(
        cluster["status_reason"],
        "The failed update was rolled back."
    );

    // A failing delete: DELETE_FAILED; members cannot force, admins can.
    let stuck = create_cluster(
        &app,
        ALICE,
        json!({"cluster_template_id": "t", "name": "d", "labels": {"test_fail_on": "delete"}}),
    )
    .await;
    app.wait_for_status(&stuck, ALICE, "CREATE_COMPLETE").await;
    assert_eq!(
        app.delete(&format!("/v1/clusters/{stuck}"), ALICE)
            .await
            .status,
        204
    );
    let cluster = app.wait_for_status(&stuck, ALICE, "DELETE_FAILED").await;
    assert_eq!(
        cluster["status_reason"],
        "The scripted driver was told to fail on delete."
    );
    assert_eq!(
        app.delete(&format!("/v1/clusters/{stuck}?force=true"), ALICE)
            .await
            .status,
        403
    );
    assert_eq!(
        app.delete(&format!("/v1/clusters/{stuck}?force=true"), ADMIN)
            .await
            .status,
        204
    );
    assert_eq!(
        app.get(&format!("/v1/clusters/{stuck}"), ALICE)
            .await
            .status,
        404
    );
    assert!(
        driver.has_cluster(stuck.parse().unwrap()),
        "force leaves the driver alone"
    );

    // A create that never ends is overtaken by a delete.
    let hung = create_cluster(
        &app,
        ALICE,
        json!({"cluster_template_id": "t", "name": "h", "labels": {"test_hang_on": "create"}}),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        app.delete(&format!("/v1/clusters/{hung}"), ALICE)
            .await
            .status,
        204
    );
    app.wait_for_cluster(&hung, ALICE, 20, |reply| reply.status == 404)
        .await;
    app.stop().await;
}

#[tokio::test]
async fn a_create_past_its_timeout_fails_with_the_reason_after_a_restart() {
    let engine = engines()[0];
    let (app, _driver) = TestApp::spawn_scripted(engine).await;
    app.create_scripted_template(ALICE, json!({"name": "t"}))
        .await;
    let uuid = create_cluster(
        &app,
        ALICE,
        json!({"cluster_template_id": "t", "create_timeout": 1, "labels": {"test_hang_on": "create"}}),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // The process dies; by the time a conductor looks again the deadline has passed.
    let database_url = app.database_url.clone();
    let database = app.crash().await;
    app_sql(
        &database_url,
        &format!("UPDATE cluster SET created_at = created_at - 120 WHERE uuid = '{uuid}'"),
    )
    .await;
    app_sql(&database_url, "UPDATE operation SET lease_until = 0").await;
    let driver = magnum_test_support::scripted::ScriptedDriver::shared();
    let drivers: Vec<std::sync::Arc<dyn magnum_driver::Driver>> = vec![driver];
    let restarted = TestApp::spawn_on(database, drivers).await;
    let cluster = restarted
        .wait_for_status(&uuid, ALICE, "CREATE_FAILED")
        .await;
    assert_eq!(
        cluster["status_reason"],
        "Timed out: the cluster was not created within its create_timeout of 1 minute."
    );
    restarted.stop().await;
}

async fn app_sql(url: &str, sql: &str) {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut connection = sqlx::AnyConnection::connect(url).await.unwrap();
    sqlx::query(sql).execute(&mut connection).await.unwrap();
    connection.close().await.unwrap();
}

engine_tests!(nodegroups_are_created_updated_and_deleted_with_upstream_rules);
async fn nodegroups_are_created_updated_and_deleted_with_upstream_rules(engine: Engine) {
    let (app, _driver) = TestApp::spawn_scripted(engine).await;
    app.create_scripted_template(ALICE, json!({"name": "t"}))
        .await;
    let uuid = create_cluster(
        &app,
        ALICE,
        json!({"cluster_template_id": "t", "name": "k", "labels": {"a": "1"}}),
    )
    .await;
    let base = format!("/v1/clusters/{uuid}/nodegroups");
    // A cluster still being created (forever) has no API address yet.
    let hung = create_cluster(
        &app,
        ALICE,
        json!({"cluster_template_id": "t", "name": "hung", "labels": {"test_hang_on": "create"}}),
    )
    .await;
    let early = app
        .send_at(
            "latest",
            "POST",
            &format!("/v1/clusters/{hung}/nodegroups"),
            ALICE,
            Some(json!({"name": "late"})),
        )
        .await;
    assert_eq!(
        (early.status, detail(&early).as_str()),
        (409, "Cluster API address is not available yet"),
        "{}",
        engine.name()
    );
    app.delete(&format!("/v1/clusters/{hung}"), ALICE).await;
    app.wait_for_status(&uuid, ALICE, "CREATE_COMPLETE").await;
    assert_eq!(
        app.send_at("1.8", "GET", &base, ALICE, None).await.status,
        406
    );
    let reply = app
        .send_at(
            "latest",
            "POST",
            &base,
            ALICE,
            Some(json!({
            "name": "gpu", "node_count": 2, "min_node_count": 1, "max_node_count": 5,
            "labels": {"extra": "y"}, "merge_labels": true,
            "node_labels": {"workload": "gpu"},
            "node_taints": [{"key": "gpu", "value": "true", "effect": "NoSchedule"}]})),
        )
        .await;
    assert_eq!(reply.status, 202, "{}", String::from_utf8_lossy(&reply.raw));
    assert_eq!(reply.body["status"], "CREATE_IN_PROGRESS");
    assert_eq!(reply.body["node_addresses"], Value::Null);
    assert_eq!(reply.body["labels"], json!({"a": "1", "extra": "y"}));
    assert_eq!(reply.body["labels_added"], json!({"extra": "y"}));
    assert_eq!(reply.body["is_default"], false);
    assert_eq!(
        reply.body["node_taints"],
        json!([{"effect": "NoSchedule", "key": "gpu", "value": "true"}])
    );
    let minimal = app
        .send_at(
            "latest",
            "POST",
            &base,
            ALICE,
            Some(json!({"name": "mini"})),
        )
        .await;
    assert_eq!(minimal.status, 202);
    assert_eq!(minimal.body["node_labels"], Value::Null);
    for (body, status, message) in [
        (json!({"name": "gpu"}), 409, "A node group with name gpu already exists in the cluster k.".to_owned()),
        (json!({"name": "m2", "role": "master"}), 400, "Creating master nodegroups is currently not supported.".to_owned()),
        (json!({"name": "bad", "min_node_count": 3, "node_count": 1}), 409,
         "min_node_count for bad is invalid (min_node_count (3) should be less or equal to node_count (1)).".to_owned()),
        // The autoscaler's bounds are checked as upstream checks them.
        (json!({"name": "bad", "min_node_count": 3, "max_node_count": 2, "node_count": 3}), 409,
         "max_node_count for bad is invalid (min_node_count (3) should be less or equal to max_node_count (2)).".to_owned()),
        (json!({"name": "bad", "max_node_count": 2, "node_count": 3}), 409,
         "max_node_count for bad is invalid (node_count (3) should be less or equal to max_node_count (2)).".to_owned()),
        (json!({"name": "bad", "node_taints": [{"key": "k", "effect": "Bogus"}]}), 409,
         "node_taints for bad is invalid (node_taints[0].effect must be one of NoSchedule, PreferNoSchedule, NoExecute).".to_owned()),
        (json!({"node_count": 1}), 400, "Invalid input for field/attribute name. Value: 'None'. Mandatory field missing.".to_owned()),
    ] {
        let reply = app.send_at("latest", "POST", &base, ALICE, Some(body.clone())).await;
        assert_eq!((reply.status, detail(&reply)), (status, message), "{body}");
    }
    app.wait_for_status(&uuid, ALICE, "UPDATE_COMPLETE").await;
    let gpu = app
        .send_at("latest", "GET", &format!("{base}/gpu"), ALICE, None)
        .await;
    assert_eq!(gpu.body["status"], "CREATE_COMPLETE", "{}", engine.name());
    assert_eq!(gpu.body["node_addresses"].as_array().unwrap().len(), 2);
    let cluster = app.get(&format!("/v1/clusters/{uuid}"), ALICE).await.body;
    assert_eq!(cluster["node_count"], 1 + 2 + 1);
    // List: role filter, pagination with a uuid marker.
    let masters = app
        .send_at("latest", "GET", &format!("{base}?role=master"), ALICE, None)
        .await;
    assert_eq!(masters.body["nodegroups"].as_array().unwrap().len(), 1);
    let page = app
        .send_at("latest", "GET", &format!("{base}?limit=1"), ALICE, None)
        .await;
    assert!(page.body["next"]
        .as_str()
        .unwrap()
        .contains("limit=1&marker="));
    // Walking the pages by name, descending, two at a time, meets every nodegroup once.
    let all = app.send_at("latest", "GET", &base, ALICE, None).await;
    let mut expected: Vec<String> = all.body["nodegroups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|nodegroup| nodegroup["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(expected.len() >= 3, "{}", all.body);
    expected.sort_unstable_by(|a, b| b.cmp(a));
    let mut walked = Vec::new();
    let mut next = Some(format!("{base}?sort_key=name&sort_dir=desc&limit=2"));
    while let Some(path) = next.take() {
        let reply = app.send_at("latest", "GET", &path, ALICE, None).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        let names = reply.body["nodegroups"].as_array().unwrap();
        assert!(names.len() <= 2);
        walked.extend(
            names
                .iter()
                .map(|nodegroup| nodegroup["name"].as_str().unwrap().to_owned()),
        );
        next = reply.body["next"]
            .as_str()
            .map(|link| link[link.find("/v1/").expect("a link into the API")..].to_owned());
        assert!(walked.len() <= expected.len(), "{walked:?}");
    }
    assert_eq!(walked, expected, "{}", engine.name());
    let workers = app
        .send_at(
            "latest",
            "GET",
            &format!("{base}?role=worker&limit=1&sort_key=id"),
            ALICE,
            None,
        )
        .await;
    assert_eq!(
        workers.body["nodegroups"][0]["name"], "default-worker",
        "{}",
        workers.body
    );
    let unknown = uuid::Uuid::new_v4();
    let reply = app
        .send_at(
            "latest",
            "GET",
            &format!("{base}?marker={unknown}"),
            ALICE,
            None,
        )
        .await;
    assert_eq!(
        (reply.status, detail(&reply)),
        (404, format!("Nodegroup {unknown} could not be found."))
    );
    let reply = app
        .send_at(
            "latest",
            "GET",
            &format!("{base}?marker=default-worker"),
            ALICE,
            None,
        )
        .await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        app.send_at("latest", "GET", &format!("{base}/detail"), ALICE, None)
            .await
            .status,
        404
    );
    // Update: bounds and node labels; the count is not patchable here.
    let reply = app
        .send_at(
            "latest",
            "PATCH",
            &format!("{base}/gpu"),
            ALICE,
            Some(json!([{"op": "replace", "path": "/max_node_count", "value": 10}])),
        )
        .await;
    assert_eq!(
        (reply.status, reply.body["max_node_count"].clone()),
        (202, json!(10))
    );
    // A maximum below the nodegroup's size (2) is refused, as upstream does.
    let reply = app
        .send_at(
            "latest",
            "PATCH",
            &format!("{base}/gpu"),
            ALICE,
            Some(json!([{"op": "replace", "path": "/max_node_count", "value": 1}])),
        )
        .await;
    assert_eq!(
        (reply.status, detail(&reply)),
        (
            409,
            "max_node_count for gpu is invalid (node_count (2) should be less or equal to max_node_count (1))."
                .to_owned()
        )
    );
    let reply = app
        .send_at(
            "latest",
            "PATCH",
            &format!("{base}/gpu"),
            ALICE,
            Some(json!([{"op": "replace", "path": "/node_count", "value": 3}])),
        )
        .await;
    assert_eq!(
        detail(&reply),
        "'/node_count' is an internal attribute and can not be updated"
    );
    let reply = app
        .send_at(
            "latest",
            "PATCH",
            &format!("{base}/gpu"),
            ALICE,
            Some(json!([{"op": "replace", "path": "/node_labels", "value": "{'x': 'y'}"}])),
        )
        .await;
    assert_eq!(
        (reply.status, reply.body["node_labels"].clone()),
        (202, json!({"x": "y"}))
    );
    app.wait_for_status(&uuid, ALICE, "UPDATE_COMPLETE").await;
    let reply = app
        .send_at(
            "latest",
            "PATCH",
            &format!("{base}/gpu"),
            ALICE,
            Some(json!([{"op": "replace", "path": "/min_node_count", "value": 7}])),
        )
        .await;
    assert_eq!(reply.status, 409);
    // Delete: never the defaults.
    let reply = app
        .send_at(
            "latest",
            "DELETE",
            &format!("{base}/default-worker"),
            ALICE,
            None,
        )
        .await;
    assert_eq!(
        (reply.status, detail(&reply).as_str()),
        (400, "Deleting a default nodegroup is not supported.")
    );
    assert_eq!(
        app.send_at("latest", "DELETE", &format!("{base}/gpu"), ALICE, None)
            .await
            .status,
        204
    );
    app.wait_for_status(&uuid, ALICE, "UPDATE_COMPLETE").await;
    let reply = app
        .send_at("latest", "GET", &format!("{base}/gpu"), ALICE, None)
        .await;
    assert_eq!(
        (reply.status, detail(&reply).as_str()),
        (404, "Nodegroup gpu could not be found.")
    );
    let cluster = app.get(&format!("/v1/clusters/{uuid}"), ALICE).await.body;
    assert_eq!(cluster["node_count"], 2);
    // Admins read other projects' nodegroups but do not create in them.
    assert_eq!(
        app.send_at("latest", "GET", &base, ADMIN, None)
            .await
            .status,
        200
    );
    assert_eq!(
        app.send_at("latest", "POST", &base, ADMIN, Some(json!({"name": "adm"})))
            .await
            .status,
        404
    );
    app.stop().await;
}

engine_tests!(quotas_limit_clusters_and_stats_count_them);
async fn quotas_limit_clusters_and_stats_count_them(engine: Engine) {
    let (app, _driver) = TestApp::spawn_scripted_with(engine, |config| {
        config.quotas.max_clusters_per_project = 3;
    })
    .await;
    app.create_scripted_template(ALICE, json!({"name": "t", "public": false}))
        .await;
    let reply = app
        .post(
            "/v1/quotas",
            ALICE,
            json!({"project_id": "p-0001", "hard_limit": 2, "resource": "Cluster"}),
        )
        .await;
    assert_eq!(
        (reply.status, detail(&reply).as_str()),
        (403, "Policy doesn't allow quota:create to be performed.")
    );
    let reply = app
        .post(
            "/v1/quotas",
            ADMIN,
            json!({"project_id": "p-0001", "hard_limit": 2, "resource": "Cluster"}),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", String::from_utf8_lossy(&reply.raw));
    assert_eq!(
        keys(&reply.body),
        sorted(&[
            "created_at",
            "hard_limit",
            "id",
            "project_id",
            "resource",
            "updated_at"
        ])
    );
    for (body, status, message) in [
        (json!({"project_id": "p-0001", "hard_limit": 5}), 409, "Quota for project p-0001 already exists for resource Cluster."),
        (json!({"project_id": "p-0001", "resource": "Node"}), 400, "Invalid input for field/attribute resource. Value: 'Node'. Value should be one of: Cluster"),
        (json!({"hard_limit": 5}), 400, "Must provide a valid project ID."),
    ] {
        let reply = app.post("/v1/quotas", ADMIN, body).await;
        assert_eq!((reply.status, detail(&reply).as_str()), (status, message));
    }
    assert_eq!(
        app.post("/v1/quotas", ADMIN, json!({"project_id": "p-x"}))
            .await
            .body["hard_limit"],
        1
    );
    create_cluster(&app, ALICE, json!({"cluster_template_id": "t"})).await;
    create_cluster(&app, ALICE, json!({"cluster_template_id": "t"})).await;
    let reply = app
        .post("/v1/clusters", ALICE, json!({"cluster_template_id": "t"}))
        .await;
    assert_eq!(
        (reply.status, detail(&reply).as_str()),
        (403, "Resource limit exceeded: You have reached the maximum clusters per project, 2. You may delete a cluster to make room for a new one.")
    );
    // Lists: own project unless all_tenants.
    assert_eq!(app.get("/v1/quotas", ALICE).await.status, 403);
    assert_eq!(app.get("/v1/quotas", ADMIN).await.body["quotas"], json!([]));
    let all = app.get("/v1/quotas?all_tenants=True", ADMIN).await.body;
    assert_eq!(all["quotas"].as_array().unwrap().len(), 2);
    let page = app
        .get("/v1/quotas?all_tenants=True&limit=1", ADMIN)
        .await
        .body;
    let first_id = page["quotas"][0]["id"].as_i64().unwrap();
    assert!(page["next"]
        .as_str()
        .unwrap()
        .ends_with(&format!("limit=1&marker={first_id}")));
    // Reading, updating, deleting.
    assert_eq!(
        app.get("/v1/quotas/p-0001/Cluster", ALICE).await.body["hard_limit"],
        2
    );
    assert_eq!(app.get("/v1/quotas/p-x/Cluster", ALICE).await.status, 403);
    assert_eq!(
        app.get("/v1/quotas/p-none/Cluster", ADMIN).await.body,
        json!({"hard_limit": 3, "project_id": "p-none", "resource": "Cluster"})
    );
    let reply = app
        .patch(
            "/v1/quotas/p-0001/Cluster",
            ADMIN,
            json!({"hard_limit": 9, "project_id": "p-0001", "resource": "Cluster"}),
        )
        .await;
    assert_eq!(
        (reply.status, reply.body["hard_limit"].clone()),
        (202, json!(9))
    );
    assert!(reply.body["updated_at"].is_string());
    let reply = app
        .patch("/v1/quotas/p-none/Cluster", ADMIN, json!({"hard_limit": 9}))
        .await;
    assert_eq!(
        (reply.status, detail(&reply).as_str()),
        (
            404,
            "Quota could not be found: project_id p-none resource Cluster."
        )
    );
    assert_eq!(
        app.delete("/v1/quotas/p-0001/Cluster", ADMIN).await.status,
        204
    );
    assert_eq!(
        app.delete("/v1/quotas/p-0001/Cluster", ADMIN).await.status,
        404
    );
    // Back to the configured default of 3.
    create_cluster(&app, ALICE, json!({"cluster_template_id": "t"})).await;
    assert_eq!(
        app.post("/v1/clusters", ALICE, json!({"cluster_template_id": "t"}))
            .await
            .status,
        403
    );

    // Stats: clusters and every node, masters included.
    let stats = app.get("/v1/stats", ALICE).await;
    assert_eq!(
        stats.body,
        json!({"clusters": 3, "nodes": 6}),
        "{}",
        engine.name()
    );
    assert_eq!(
        app.get("/v1/stats?project_id=p-0002", ALICE).await.status,
        403
    );
    assert_eq!(
        detail(&app.get("/v1/stats?type=nodes", ALICE).await),
        "Invalid stats type. Allowed values are 'cluster'"
    );
    assert_eq!(
        app.get("/v1/stats", ADMIN).await.body,
        json!({"clusters": 3, "nodes": 6})
    );
    assert_eq!(
        app.get("/v1/stats?project_id=zzz", ADMIN).await.body,
        json!({"clusters": 0, "nodes": 0})
    );
    app.stop().await;
}

#[tokio::test]
async fn health_pushed_by_the_driver_shows_within_a_second() {
    let engine = engines()[0];
    let (app, driver) = TestApp::spawn_scripted(engine).await;
    app.create_scripted_template(ALICE, json!({"name": "t"}))
        .await;
    let uuid = create_cluster(&app, ALICE, json!({"cluster_template_id": "t"})).await;
    app.wait_for_status(&uuid, ALICE, "CREATE_COMPLETE").await;
    let reason = json!({"api": "ok", "node-0.Ready": "False"});
    driver.report_health(
        uuid.parse().unwrap(),
        HealthStatus::Unhealthy,
        reason.as_object().unwrap().clone(),
    );
    let reply = app
        .wait_for_cluster(&uuid, ALICE, 1, |reply| {
            reply.body["health_status"] == "UNHEALTHY"
        })
        .await;
    assert_eq!(reply.body["health_status_reason"], reason);
    app.stop().await;
}

engine_tests!(two_conductors_share_the_work_and_take_over_from_each_other);
async fn two_conductors_share_the_work_and_take_over_from_each_other(engine: Engine) {
    let driver = magnum_test_support::scripted::ScriptedDriver::shared();
    let drivers: Vec<std::sync::Arc<dyn magnum_driver::Driver>> = vec![driver.clone()];
    let app = TestApp::spawn_with_drivers(engine, magnumd::Role::All, |_| {}, &drivers).await;
    let peer = app.start_peer_conductor("conductor-peer", &drivers).await;
    app.create_scripted_template(ALICE, json!({"name": "t"}))
        .await;
    let mut clusters = Vec::new();
    for index in 0..8 {
        clusters.push(
            create_cluster(&app, ALICE, json!({"cluster_template_id": "t", "name": format!("c{index}"), "labels": {"test_step_ms": "30"}})).await,
        );
    }
    for uuid in &clusters {
        app.wait_for_status(uuid, ALICE, "CREATE_COMPLETE").await;
    }
    // Each operation ran once.
    let creates = driver
        .calls()
        .iter()
        .filter(|call| call.action == magnum_driver::Action::CreateCluster)
        .count();
    assert_eq!(creates, 8, "{}", engine.name());
    let services = app.get("/v1/mservices", ADMIN).await.body;
    assert_eq!(services["mservices"].as_array().unwrap().len(), 2);

    // The peer dies holding an operation that never ends on its own; the survivor
    // takes it over once the lease runs out, and the delete finishes.
    let uuid = create_cluster(
        &app,
        ALICE,
        json!({"cluster_template_id": "t", "name": "slow", "labels": {"test_step_ms": "400"}}),
    )
    .await;
    peer.abort().await;
    app.wait_for_status(&uuid, ALICE, "CREATE_COMPLETE").await;
    app.stop().await;
}

#[tokio::test]
async fn a_rabbitmq_consumer_receives_one_clusters_life_in_order() {
    use magnum_conductor::amqp::{AmqpAddress, AmqpConnection};
    let url = std::env::var("MAGNUM_TEST_RABBITMQ_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/".to_owned());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let exchange = format!("magnum-test-{suffix}");
    let topic = format!("notifications-{}", &suffix[..8]);
    let engine = engines()[0];
    let (app, _driver) = TestApp::spawn_scripted_with(engine, |config| {
        config.notifications.sink = magnumd::config::NotificationSink::Rabbitmq;
        config.notifications.transport_url = url.clone();
        config.notifications.exchange = exchange.clone();
        config.notifications.topic = topic.clone();
    })
    .await;
    app.create_scripted_template(ALICE, json!({"name": "t"}))
        .await;
    let uuid = create_cluster(
        &app,
        ALICE,
        json!({"cluster_template_id": "t", "name": "n1"}),
    )
    .await;
    app.wait_for_status(&uuid, ALICE, "CREATE_COMPLETE").await;
    assert_eq!(
        app.delete(&format!("/v1/clusters/{uuid}"), ALICE)
            .await
            .status,
        204
    );
    app.wait_for_cluster(&uuid, ALICE, 20, |reply| reply.status == 404)
        .await;
    let failed = create_cluster(
        &app,
        ALICE,
        json!({"cluster_template_id": "t", "name": "n2", "labels": {"test_fail_on": "create"}}),
    )
    .await;
    app.wait_for_status(&failed, ALICE, "CREATE_FAILED").await;

    let mut consumer = AmqpConnection::connect(&AmqpAddress::parse(&url).unwrap())
        .await
        .expect("RabbitMQ is reachable (scripts/test starts it)");
    let info = drain(&mut consumer, &format!("{topic}.info")).await;
    let life: Vec<(String, String)> = info
        .iter()
        .filter(|event| event["payload"]["target"]["id"] == uuid.as_str())
        .map(|event| {
            (
                event["event_type"].as_str().unwrap().to_owned(),
                event["payload"]["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        life,
        [
            ("magnum.cluster.create".to_owned(), "pending".to_owned()),
            ("magnum.cluster.create".to_owned(), "success".to_owned()),
            ("magnum.cluster.delete".to_owned(), "pending".to_owned()),
            ("magnum.cluster.delete".to_owned(), "success".to_owned()),
        ]
    );
    let first = &info[0];
    assert_eq!(first["priority"], "INFO");
    assert!(first["publisher_id"]
        .as_str()
        .unwrap()
        .starts_with("container-infra."));
    assert_eq!(
        first["payload"]["typeURI"],
        "http://schemas.dmtf.org/cloud/audit/1.0/event"
    );
    assert_eq!(first["payload"]["initiator"]["project_id"], "p-0001");
    assert!(first["payload"]["target"]["attachments"][0]["content"]
        .get("docker_volume_size:")
        .is_some());
    let errors = drain(&mut consumer, &format!("{topic}.error")).await;
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["priority"], "ERROR");
    assert_eq!(errors[0]["event_type"], "magnum.cluster.create");
    assert_eq!(errors[0]["payload"]["outcome"], "failure");
    assert_eq!(errors[0]["payload"]["target"]["id"], failed.as_str());
    consumer
        .delete_topic(
            &exchange,
            &[&format!("{topic}.info"), &format!("{topic}.error")],
        )
        .await
        .unwrap();
    app.stop().await;
}

/// Every oslo.messaging envelope waiting in `queue`.
async fn drain(consumer: &mut magnum_conductor::amqp::AmqpConnection, queue: &str) -> Vec<Value> {
    let mut events = Vec::new();
    while let Some(body) = consumer.get(queue).await.unwrap() {
        let message: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(message["oslo.version"], "2.0");
        events.push(serde_json::from_str(message["oslo.message"].as_str().unwrap()).unwrap());
    }
    events
}

#[tokio::test]
async fn an_update_that_outlives_its_timeout_fails_with_the_reason() {
    let engine = engines()[0];
    let (app, _driver) = TestApp::spawn_scripted_with(engine, |config| {
        config.conductor.operation_timeout = 2;
    })
    .await;
    app.create_scripted_template(ALICE, json!({"name": "t"}))
        .await;
    let uuid = create_cluster(
        &app,
        ALICE,
        json!({"cluster_template_id": "t", "labels": {"test_hang_on": "scale"}}),
    )
    .await;
    app.wait_for_status(&uuid, ALICE, "CREATE_COMPLETE").await;
    let reply = app
        .send_at(
            "latest",
            "POST",
            &format!("/v1/clusters/{uuid}/actions/resize"),
            ALICE,
            Some(json!({"node_count": 3})),
        )
        .await;
    assert_eq!(reply.status, 202);
    let cluster = app.wait_for_status(&uuid, ALICE, "UPDATE_FAILED").await;
    assert!(
        cluster["status_reason"]
            .as_str()
            .unwrap()
            .starts_with("Timed out: the resize cluster did not finish in time"),
        "{cluster}"
    );
    assert_eq!(cluster["node_count"], 1, "the count is put back");
    app.stop().await;
}

engine_tests!(many_concurrent_creates_are_all_accepted_and_completed);
async fn many_concurrent_creates_are_all_accepted_and_completed(engine: Engine) {
    let (app, _driver) = TestApp::spawn_scripted_with(engine, |config| {
        config.quotas.max_clusters_per_project = 1000;
        config.database.max_connections = 8;
    })
    .await;
    app.create_scripted_template(ALICE, json!({"name": "t"}))
        .await;
    let app = std::sync::Arc::new(app);
    let mut creates = tokio::task::JoinSet::new();
    for _ in 0..60 {
        let app = app.clone();
        creates.spawn(async move {
            app.send_at(
                "latest",
                "POST",
                "/v1/clusters",
                ALICE,
                Some(json!({"cluster_template_id": "t"})),
            )
            .await
        });
    }
    let mut uuids = Vec::new();
    while let Some(reply) = creates.join_next().await {
        let reply = reply.unwrap();
        assert_eq!(
            reply.status,
            202,
            "{}: {}",
            engine.name(),
            String::from_utf8_lossy(&reply.raw)
        );
        uuids.push(reply.body["uuid"].as_str().unwrap().to_owned());
    }
    for uuid in &uuids {
        app.wait_for_status(uuid, ALICE, "CREATE_COMPLETE").await;
    }
    assert_eq!(
        app.get("/v1/stats", ALICE).await.body,
        json!({"clusters": 60, "nodes": 120})
    );
    std::sync::Arc::try_unwrap(app).ok().unwrap().stop().await;
}

/// The largest i64: `master_count + node_count` once wrapped past the capacity check.
const HUGE: i64 = i64::MAX;

fn too_many(field: &str, value: i64) -> String {
    format!(
        "Invalid input for field/attribute {field}. Value: '{value}'. Value should be lower or equal to {}",
        magnum_domain::nodegroup::MAX_NODE_COUNT
    )
}

/// A 400 in Magnum's envelope with this detail.
fn assert_refused(reply: &Reply, message: &str, engine: &str) {
    assert_eq!(
        (reply.status, detail(reply).as_str()),
        (400, message),
        "{engine}: {}",
        String::from_utf8_lossy(&reply.raw)
    );
    assert_eq!(reply.body["errors"][0]["code"], "client", "{engine}");
    assert_eq!(reply.body["errors"][0]["status"], 400, "{engine}");
}

engine_tests!(counts_past_the_bound_are_refused_and_nothing_is_stored);
async fn counts_past_the_bound_are_refused_and_nothing_is_stored(engine: Engine) {
    let engine_name = engine.name();
    let (app, driver) = TestApp::spawn_scripted(engine).await;
    app.create_scripted_template(ALICE, json!({"name": "t", "master_lb_enabled": true}))
        .await;
    for (field, value, body) in [
        (
            "node_count",
            HUGE,
            json!({"cluster_template_id": "t", "node_count": HUGE}),
        ),
        (
            "node_count",
            10_001,
            json!({"cluster_template_id": "t", "node_count": 10_001}),
        ),
        (
            "master_count",
            HUGE,
            json!({"cluster_template_id": "t", "master_count": HUGE}),
        ),
        (
            "master_count",
            HUGE,
            json!({"cluster_template_id": "t", "master_count": HUGE, "node_count": 1}),
        ),
    ] {
        let reply = app
            .send_at("latest", "POST", "/v1/clusters", ALICE, Some(body))
            .await;
        assert_refused(&reply, &too_many(field, value), engine_name);
    }
    assert_eq!(
        app.get("/v1/clusters", ALICE).await.body["clusters"],
        json!([]),
        "{engine_name}"
    );
    assert_eq!(
        app.get("/v1/stats", ADMIN).await.body,
        json!({"clusters": 0, "nodes": 0})
    );
    assert!(driver.calls().is_empty(), "{engine_name}");

    let uuid = create_cluster(&app, ALICE, json!({"cluster_template_id": "t"})).await;
    app.wait_for_status(&uuid, ALICE, "CREATE_COMPLETE").await;
    let path = format!("/v1/clusters/{uuid}");
    let nodegroups = format!("{path}/nodegroups");
    let reply = app
        .send_at(
            "latest",
            "PATCH",
            &path,
            ALICE,
            Some(json!([{"op": "replace", "path": "/node_count", "value": HUGE}])),
        )
        .await;
    assert_refused(&reply, &too_many("node_count", HUGE), engine_name);
    for body in [
        json!({"node_count": HUGE}),
        json!({"node_count": HUGE, "nodegroup": "default-worker"}),
    ] {
        let reply = app
            .send_at(
                "latest",
                "POST",
                &format!("{path}/actions/resize"),
                ALICE,
                Some(body),
            )
            .await;
        assert_refused(&reply, &too_many("node_count", HUGE), engine_name);
    }
    for field in ["node_count", "min_node_count", "max_node_count"] {
        let reply = app
            .send_at(
                "latest",
                "POST",
                &nodegroups,
                ALICE,
                Some(json!({"name": "big", field: HUGE})),
            )
            .await;
        assert_refused(&reply, &too_many(field, HUGE), engine_name);
    }
    let worker = format!("{nodegroups}/default-worker");
    let reply = app
        .send_at(
            "latest",
            "PATCH",
            &worker,
            ALICE,
            Some(json!([{"op": "replace", "path": "/max_node_count", "value": HUGE}])),
        )
        .await;
    assert_refused(&reply, &too_many("max_node_count", HUGE), engine_name);

    // Nothing of it was stored or reached the driver.
    let cluster = app.get(&path, ALICE).await.body;
    assert_eq!(
        (cluster["status"].clone(), cluster["node_count"].clone()),
        (json!("CREATE_COMPLETE"), json!(1)),
        "{engine_name}"
    );
    let listed = app.send_at("latest", "GET", &nodegroups, ALICE, None).await;
    assert_eq!(listed.body["nodegroups"].as_array().unwrap().len(), 2);
    assert_eq!(
        app.send_at("latest", "GET", &worker, ALICE, None)
            .await
            .body["max_node_count"],
        Value::Null
    );
    assert_eq!(driver.node_count(uuid.parse().unwrap()), 2, "{engine_name}");
    assert_eq!(
        app.get("/v1/stats", ALICE).await.body,
        json!({"clusters": 1, "nodes": 2})
    );
    // The bound itself is a count like any other.
    let reply = app
        .send_at(
            "latest",
            "PATCH",
            &worker,
            ALICE,
            Some(json!([{"op": "replace", "path": "/max_node_count", "value": 10_000}])),
        )
        .await;
    assert_eq!(reply.status, 202, "{}", String::from_utf8_lossy(&reply.raw));
    assert_eq!(reply.body["max_node_count"], 10_000);
    app.stop().await;
}

engine_tests!(stats_answer_even_when_stored_counts_overflow_their_sum);
async fn stats_answer_even_when_stored_counts_overflow_their_sum(engine: Engine) {
    let engine_name = engine.name();
    let (app, _driver) = TestApp::spawn_scripted(engine).await;
    let template = app
        .create_scripted_template(ALICE, json!({"name": "t"}))
        .await;
    let template_uuid = template["uuid"].as_str().unwrap();
    // As an older release could have stored them, before counts were bounded: one row whose
    // own node_count + master_count overflows, and a project whose sum overflows.
    for (project_id, node_count, master_count) in [
        ("p-0001", HUGE, HUGE),
        ("p-0002", HUGE, 1),
        ("p-0002", 1, 1),
        ("p-0003", 3, 1),
    ] {
        app_sql(
            &app.database_url,
            &format!(
                "INSERT INTO cluster (uuid, version, name, project_id, user_id, \
                 cluster_template_id, labels, floating_ip_enabled, master_lb_enabled, status, \
                 node_count, master_count, created_at) \
                 VALUES ('{}', 1, 'c', '{project_id}', 'u', '{template_uuid}', '{{}}', 1, 0, \
                 'CREATE_COMPLETE', {node_count}, {master_count}, 0)",
                uuid::Uuid::new_v4()
            ),
        )
        .await;
    }
    for (caller, path, expected) in [
        (ALICE, "/v1/stats", json!({"clusters": 1, "nodes": HUGE})),
        (ADMIN, "/v1/stats", json!({"clusters": 4, "nodes": HUGE})),
        (
            ADMIN,
            "/v1/stats?project_id=p-0002",
            json!({"clusters": 2, "nodes": HUGE}),
        ),
        (
            ADMIN,
            "/v1/stats?project_id=p-0003",
            json!({"clusters": 1, "nodes": 4}),
        ),
    ] {
        let reply = app.get(path, caller).await;
        assert_eq!(
            (reply.status, reply.body.clone()),
            (200, expected),
            "{engine_name} {path}: {}",
            String::from_utf8_lossy(&reply.raw)
        );
    }
    app.stop().await;
}
