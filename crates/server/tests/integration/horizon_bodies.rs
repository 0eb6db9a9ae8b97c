//! Bodies as Horizon's magnum-ui 19 sends them (through python-magnumclient 4.9), each found
//! by the Horizon compatibility test (crates/testbed/tests/horizon.rs) and answered as
//! upstream does: every value of a create is `str()`-ed (`"60"`, `"False"`, `""`), a
//! cluster's labels carry JSON booleans, and the quota form sends the quota back whole,
//! `id` included.

use serde_json::json;

use crate::support::{TestApp, ADMIN, ALICE};
use magnum_test_support::{engine_tests, Engine};

engine_tests!(creates_with_every_value_a_string_are_read_as_upstream_reads_them);
async fn creates_with_every_value_a_string_are_read_as_upstream_reads_them(engine: Engine) {
    let (app, _driver) = TestApp::spawn_scripted(engine).await;
    // The template form: numbers and booleans as strings.
    let template = app
        .create_scripted_template(
            ALICE,
            json!({"name": "from-horizon", "docker_volume_size": "20", "public": "False",
                   "floating_ip_enabled": "True", "master_lb_enabled": "False"}),
        )
        .await;
    assert_eq!(template["docker_volume_size"], 20, "{template}");
    assert_eq!(template["floating_ip_enabled"], true);
    // The cluster form, as magnum-ui's `_cleanup_params` hands it to magnumclient.
    let reply = app
        .send_at(
            "1.13",
            "POST",
            "/v1/clusters",
            ALICE,
            Some(json!({
                "name": "from-horizon", "cluster_template_id": template["uuid"],
                "discovery_url": "", "create_timeout": "60", "keypair": "testkey",
                "master_count": "1", "node_count": "2", "master_flavor_id": "s.small",
                "flavor_id": "s.small", "master_lb_enabled": "False",
                "labels": {"availability_zone": "nova", "auto_scaling_enabled": false,
                           "auto_healing_enabled": true, "master_lb_floating_ip_enabled": false},
            })),
        )
        .await;
    assert_eq!(reply.status, 202, "{}", String::from_utf8_lossy(&reply.raw));
    let uuid = reply.body["uuid"].as_str().unwrap().to_owned();
    let cluster = app.wait_for_status(&uuid, ALICE, "CREATE_COMPLETE").await;
    assert_eq!(
        (
            &cluster["create_timeout"],
            &cluster["master_count"],
            &cluster["node_count"]
        ),
        (&json!(60), &json!(1), &json!(2)),
        "{cluster}"
    );
    assert_eq!(cluster["master_lb_enabled"], false);
    assert_eq!(
        cluster["labels"],
        json!({"availability_zone": "nova", "auto_scaling_enabled": "False",
               "auto_healing_enabled": "True", "master_lb_floating_ip_enabled": "False"})
    );
    // A string that is no integer, and an integer string out of bounds, are refused as before,
    // and nothing is stored.
    for (body, message) in [
        (
            json!({"cluster_template_id": template["uuid"], "node_count": "two"}),
            "Invalid input for field/attribute node_count. Value: 'two'. Wrong type. Expected '<class 'int'>', got '<class 'str'>'",
        ),
        (
            json!({"cluster_template_id": template["uuid"], "master_count": "0"}),
            "Invalid input for field/attribute master_count. Value: '0'. Value should be greater or equal to 1",
        ),
    ] {
        let reply = app.post("/v1/clusters", ALICE, body).await;
        assert_eq!((reply.status, reply.detail()), (400, message));
    }
    let listed = app.get("/v1/clusters", ALICE).await.body;
    assert_eq!(listed["clusters"].as_array().unwrap().len(), 1, "{listed}");
    // A patch is not a body: there a string stays a string, refused (observed upstream).
    let reply = app
        .patch(
            &format!(
                "/v1/clustertemplates/{}",
                template["uuid"].as_str().unwrap()
            ),
            ALICE,
            json!([{"op": "replace", "path": "/docker_volume_size", "value": "30"}]),
        )
        .await;
    assert_eq!(reply.status, 400, "{}", String::from_utf8_lossy(&reply.raw));
}

engine_tests!(the_quota_forms_bodies_are_taken);
async fn the_quota_forms_bodies_are_taken(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    // Create: hard_limit `str()`-ed.
    let reply = app
        .post(
            "/v1/quotas",
            ADMIN,
            json!({"project_id": "p-0001", "resource": "Cluster", "hard_limit": "5"}),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", String::from_utf8_lossy(&reply.raw));
    assert_eq!(reply.body["hard_limit"], 5);
    let id = reply.body["id"].clone();
    // Update: the quota sent back whole, its id included; the id stays.
    let reply = app
        .patch(
            "/v1/quotas/p-0001/Cluster",
            ADMIN,
            json!({"id": id, "project_id": "p-0001", "resource": "Cluster", "hard_limit": 3}),
        )
        .await;
    assert_eq!(reply.status, 202, "{}", String::from_utf8_lossy(&reply.raw));
    assert_eq!(
        (&reply.body["id"], &reply.body["hard_limit"]),
        (&id, &json!(3))
    );
    // An id is still an integer ≥ 1, as upstream's type says.
    let reply = app
        .patch(
            "/v1/quotas/p-0001/Cluster",
            ADMIN,
            json!({"id": 0, "hard_limit": 4}),
        )
        .await;
    assert_eq!(
        (reply.status, reply.detail()),
        (
            400,
            "Invalid input for field/attribute id. Value: '0'. Value should be greater or equal to 1"
        )
    );
    assert_eq!(
        app.get("/v1/quotas/p-0001/Cluster", ADMIN).await.body["hard_limit"],
        3
    );
}
