//! The v1 API for cluster templates, discovery and mservices, on every engine.

use serde_json::{json, Value};

use crate::support::{TestApp, ADMIN, ALICE, BOB, NOBODY, READER};
use magnum_test_support::{engine_tests, Engine};

const TEMPLATE_KEYS: [&str; 36] = [
    "uuid",
    "name",
    "coe",
    "image_id",
    "flavor_id",
    "master_flavor_id",
    "dns_nameserver",
    "keypair_id",
    "external_network_id",
    "fixed_network",
    "fixed_subnet",
    "network_driver",
    "apiserver_port",
    "docker_volume_size",
    "cluster_distro",
    "links",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "volume_driver",
    "registry_enabled",
    "labels",
    "tls_disabled",
    "public",
    "server_type",
    "insecure_registry",
    "docker_storage_driver",
    "master_lb_enabled",
    "floating_ip_enabled",
    "project_id",
    "user_id",
    "hidden",
    "tags",
    "driver",
    "created_at",
    "updated_at",
];

fn keys(value: &Value) -> Vec<&str> {
    value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect()
}

engine_tests!(discovery_documents_and_microversions);
async fn discovery_documents_and_microversions(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let root = app.send("GET", "/", None, &[], None).await;
    assert_eq!(root.status, 200);
    assert!(root.header("openstack-api-version").is_none());
    assert!(root
        .header("x-openstack-request-id")
        .unwrap()
        .starts_with("req-"));
    let expected_root = format!(
        r#"{{"name": "OpenStack Magnum API", "description": "Magnum is an OpenStack project which aims to provide container cluster management.", "versions": [{{"id": "v1", "links": [{{"href": "{}/v1/", "rel": "self"}}], "status": "CURRENT", "max_version": "1.14", "min_version": "1.1"}}]}}"#,
        app.base_url
    );
    assert_eq!(String::from_utf8(root.raw.clone()).unwrap(), expected_root);

    for path in ["/v1", "/v1/", "/v1.json"] {
        let v1 = app.send("GET", path, None, &[], None).await;
        assert_eq!(v1.status, 200, "{path}");
        assert_eq!(
            keys(&v1.body),
            vec![
                "id",
                "media_types",
                "links",
                "clustertemplates",
                "clusters",
                "quotas",
                "certificates",
                "mservices",
                "stats",
                "federations",
                "nodegroups",
                "credentials"
            ]
        );
        assert_eq!(
            v1.header("openstack-api-version"),
            Some("container-infrastructure-management 1.1")
        );
        assert_eq!(
            v1.header("openstack-api-minimum-version"),
            Some("container-infrastructure-management 1.1")
        );
        assert_eq!(
            v1.header("openstack-api-maximum-version"),
            Some("container-infrastructure-management 1.14")
        );
        assert_eq!(v1.header("vary"), Some("OpenStack-API-Version"));
    }
    let latest = app
        .send(
            "GET",
            "/v1",
            None,
            &[("OpenStack-API-Version", "container-infra latest")],
            None,
        )
        .await;
    assert_eq!(
        latest.header("openstack-api-version"),
        Some("container-infrastructure-management 1.14")
    );

    let too_new = app
        .send(
            "GET",
            "/v1/clustertemplates",
            Some(ALICE),
            &[("OpenStack-API-Version", "container-infra 1.99")],
            None,
        )
        .await;
    assert_eq!(too_new.status, 406);
    assert_eq!(
        String::from_utf8(too_new.raw.clone()).unwrap(),
        r#"{"errors": [{"max_version": "1.14", "min_version": "1.1", "code": "magnum.microversion-unsupported", "links": [{"rel": "help", "href": "http://docs.openstack.org/api-guide/compute/microversions.html"}], "title": "Requested microversion is unsupported"}]}"#
    );
    assert_eq!(
        too_new.header("openstack-api-version"),
        Some("container-infrastructure-management 1.99")
    );
    let described = app
        .send(
            "GET",
            "/v1",
            None,
            &[
                ("OpenStack-API-Version", "container-infra 2.0"),
                ("Accept", "application/json"),
            ],
            None,
        )
        .await;
    assert!(described.body["errors"][0]["description"]
        .as_str()
        .unwrap()
        .starts_with("Mutually exclusive versions requested."));

    let bad_service = app
        .send(
            "GET",
            "/v1",
            None,
            &[("OpenStack-API-Version", "compute 2.1")],
            None,
        )
        .await;
    assert_eq!(bad_service.status, 406);
    assert_eq!(
        String::from_utf8(bad_service.raw.clone()).unwrap(),
        r#"{"errors": [{"request_id": "", "code": "", "status": 406, "title": "", "detail": "", "links": []}]}"#
    );
    assert!(bad_service.header("openstack-api-version").is_none());
    let bad_service_json = app
        .send(
            "GET",
            "/v1",
            None,
            &[
                ("OpenStack-API-Version", "compute 2.1"),
                ("Accept", "application/json"),
            ],
            None,
        )
        .await;
    assert_eq!(
        bad_service_json.body["errors"][0]["title"],
        "Not Acceptable"
    );
    assert_eq!(
        bad_service_json.detail(),
        "Invalid service type for OpenStack-API-Version header"
    );
    let garbage = app
        .send(
            "GET",
            "/v1",
            None,
            &[
                ("OpenStack-API-Version", "container-infra abc"),
                ("Accept", "application/json"),
            ],
            None,
        )
        .await;
    assert_eq!(
        garbage.detail(),
        "Invalid value for OpenStack-API-Version header"
    );
    let xml = app
        .send(
            "GET",
            "/v1/clustertemplates",
            Some(ALICE),
            &[("Accept", "application/xml")],
            None,
        )
        .await;
    assert_eq!(xml.status, 406);

    let health = app.send("GET", "/healthcheck", None, &[], None).await;
    assert_eq!(
        (health.status, health.raw.as_slice()),
        (200, b"OK".as_slice())
    );
    app.stop().await;
}

engine_tests!(routing_quirks);
async fn routing_quirks(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let created = app.create_template(ALICE, json!({"name": "t1"})).await;
    let uuid = created["uuid"].as_str().unwrap();

    for path in [
        "/clustertemplates",
        "/v1/clustertemplates/",
        "/clustertemplates/detail/",
    ] {
        let reply = app.get(path, ALICE).await;
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(
            reply.body["clustertemplates"].as_array().unwrap().len(),
            1,
            "{path}"
        );
    }
    assert_eq!(
        app.get(&format!("/v1/clustertemplates/{uuid}/"), ALICE)
            .await
            .status,
        200
    );

    let unknown = app.get("/v1/foobars", ALICE).await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.body["errors"][0]["code"], "");
    assert!(unknown.header("openstack-api-version").is_none());
    let unknown_json = app
        .send(
            "GET",
            "/v1/foobars",
            Some(ALICE),
            &[("Accept", "application/json")],
            None,
        )
        .await;
    assert_eq!(unknown_json.body["errors"][0]["title"], "Not Found");
    for removed in ["/v1/bays", "/v1/baymodels"] {
        assert_eq!(app.get(removed, ALICE).await.status, 404);
    }

    let put = app
        .send(
            "PUT",
            &format!("/v1/clustertemplates/{uuid}"),
            Some(ALICE),
            &[],
            Some(json!({})),
        )
        .await;
    assert_eq!(put.status, 405);
    assert_eq!(put.header("allow"), Some("DELETE, GET, PATCH, POST"));
    assert_eq!(
        String::from_utf8(put.raw.clone()).unwrap(),
        r#"{"errors": [{"request_id": "", "code": "", "status": 405, "title": "", "detail": "", "links": []}]}"#
    );
    assert_eq!(
        app.send("HEAD", "/v1/clustertemplates", Some(ALICE), &[], None)
            .await
            .status,
        405
    );
    assert_eq!(
        app.send("DELETE", "/v1/clustertemplates", Some(ALICE), &[], None)
            .await
            .status,
        405
    );

    let filter = app.get("/v1/clustertemplates?name=t1", ALICE).await;
    assert_eq!(filter.status, 400);
    assert_eq!(filter.detail(), "Unknown argument: \"name\"");
    assert_eq!(
        filter.header("openstack-api-version"),
        Some("container-infrastructure-management 1.1")
    );

    let suffix = app
        .get(&format!("/v1/clustertemplates/{uuid}.json"), ALICE)
        .await;
    assert_eq!(suffix.status, 404);
    assert_eq!(
        suffix.body["errors"][0]["title"],
        format!("ClusterTemplate {uuid}")
    );
    app.stop().await;
}

engine_tests!(create_fills_every_key_with_per_coe_defaults);
async fn create_fills_every_key_with_per_coe_defaults(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let reply = app
        .post(
            "/v1/clustertemplates",
            ALICE,
            json!({"coe": "swarm-mode", "image_id": "local-node"}),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", engine.name());
    let body = &reply.body;
    assert_eq!(
        keys(body),
        TEMPLATE_KEYS.to_vec(),
        "upstream's keys in upstream's order"
    );
    let uuid = body["uuid"].as_str().unwrap();
    assert_eq!(
        reply.header("location").unwrap(),
        format!("{}/v1/clustertemplates/{uuid}", app.base_url)
    );
    assert_eq!(body["network_driver"], "docker");
    assert_eq!(body["cluster_distro"], "local");
    assert_eq!(body["driver"], "local");
    assert_eq!(body["server_type"], "vm");
    assert_eq!(body["floating_ip_enabled"], true);
    assert_eq!(body["master_lb_enabled"], false);
    assert_eq!(body["labels"], json!({}));
    assert_eq!(body["project_id"], "p-0001");
    assert_eq!(body["user_id"], "u-alice");
    assert_eq!(body["updated_at"], Value::Null);
    let name = body["name"].as_str().unwrap();
    assert!(
        name.ends_with("-template") && name.split('-').count() == 3,
        "{name}"
    );
    let created_at = body["created_at"].as_str().unwrap();
    assert!(
        created_at.ends_with("+00:00") && created_at.len() == 25,
        "{created_at}"
    );
    assert_eq!(
        body["links"],
        json!([
            {"href": format!("{}/v1/clustertemplates/{uuid}", app.base_url), "rel": "self"},
            {"href": format!("{}/clustertemplates/{uuid}", app.base_url), "rel": "bookmark"}
        ])
    );

    let full = app
        .post(
            "/v1/clustertemplates",
            ALICE,
            json!({
                "name": "full", "coe": "swarm-mode", "image_id": "local-node",
                "flavor_id": "local.medium", "master_flavor_id": "local.small",
                "external_network_id": "local", "keypair_id": "anything", "dns_nameserver": "8.8.8.8,1.1.1.1",
                "docker_volume_size": 10, "docker_storage_driver": "overlay2", "apiserver_port": 2376,
                "labels": {"a": 1, "b": true, "c": 1.5, "d": "x"}, "tls_disabled": "true",
                "registry_enabled": false, "master_lb_enabled": "yes", "floating_ip_enabled": "0",
                "http_proxy": "http://proxy:3128", "no_proxy": "localhost", "tags": "a,b",
                "cluster_distro": "ignored", "uuid": "0b4e6b8c-1111-2222-3333-444455556666"
            }),
        )
        .await;
    assert_eq!(full.status, 201, "{}", String::from_utf8_lossy(&full.raw));
    let body = &full.body;
    assert_eq!(body["uuid"], "0b4e6b8c-1111-2222-3333-444455556666");
    assert_eq!(
        body["labels"],
        json!({"a": "1", "b": "True", "c": "1.5", "d": "x"})
    );
    assert_eq!(body["tls_disabled"], true);
    assert_eq!(body["master_lb_enabled"], true);
    assert_eq!(body["floating_ip_enabled"], false);
    assert_eq!(
        body["cluster_distro"], "local",
        "cluster_distro comes from the image"
    );
    assert_eq!(
        body["keypair_id"], "anything",
        "template keypairs are not validated"
    );
    let duplicate = app
        .post("/v1/clustertemplates", ALICE, json!({"coe": "swarm-mode", "image_id": "local-node", "uuid": "0b4e6b8c-1111-2222-3333-444455556666"}))
        .await;
    assert_eq!(duplicate.status, 409);
    assert_eq!(
        duplicate.detail(),
        "A ClusterTemplate with UUID 0b4e6b8c-1111-2222-3333-444455556666 already exists."
    );

    let fetched = app.get("/v1/clustertemplates/full", ALICE).await;
    assert_eq!(fetched.status, 200);
    assert_eq!(fetched.body, full.body, "GET returns what create returned");
    app.stop().await;
}

engine_tests!(create_refuses_bad_input_with_upstream_messages);
async fn create_refuses_bad_input_with_upstream_messages(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let base = json!({"coe": "swarm-mode", "image_id": "local-node", "flavor_id": "local.small",
                      "master_flavor_id": "local.small", "external_network_id": "local"});
    let with = |changes: Value| {
        let mut body = base.clone();
        for (key, value) in changes.as_object().unwrap() {
            if value.is_null() {
                body.as_object_mut().unwrap().remove(key);
            } else {
                body[key] = value.clone();
            }
        }
        body
    };
    let cases: Vec<(Value, u16, &str)> = vec![
        (with(json!({"image_id": null})), 400, "Invalid input for field/attribute image_id. Value: 'None'. Mandatory field missing."),
        (with(json!({"coe": null})), 400, "Requested COE type Unset is not supported."),
        (with(json!({"coe": "swarm"})), 400, "Invalid input for field/attribute coe. Value: 'swarm'. Value should be one of: kubernetes, swarm-mode"),
        (with(json!({"coe": "kubernetes"})), 400, "Cluster type (vm, local, kubernetes) is not supported by any loaded cluster driver. Loaded drivers support: local (vm, local, swarm-mode)."),
        (with(json!({"image_id": "nope"})), 400, "Image nope could not be found."),
        (with(json!({"flavor_id": "m1.small"})), 400, "Unable to find flavor m1.small."),
        (with(json!({"master_flavor_id": "m1.small"})), 400, "Unable to find flavor m1.small."),
        (with(json!({"external_network_id": "public"})), 400, "Unable to find external network public."),
        (with(json!({"fixed_network": "private"})), 400, "Unable to find fixed network private."),
        (with(json!({"fixed_subnet": "private-subnet"})), 400, "Unable to find fixed subnet private-subnet."),
        (with(json!({"driver": "heat"})), 400, "Cluster driver (heat) not supported."),
        (with(json!({"network_driver": "flannel"})), 400, "Network driver type flannel is not supported, expecting a docker/unspecified network driver."),
        (with(json!({"volume_driver": "cinder"})), 400, "Volume driver type cinder is not supported, expecting a no/unspecified volume driver."),
        (with(json!({"server_type": "container"})), 400, "Invalid input for field/attribute server_type. Value: 'container'. Value should be one of: vm, bm"),
        (with(json!({"server_type": "bm"})), 400, "Cluster type (bm, local, swarm-mode) is not supported by any loaded cluster driver. Loaded drivers support: local (vm, local, swarm-mode)."),
        (with(json!({"apiserver_port": 80})), 400, "Invalid input for field/attribute apiserver_port. Value: '80'. Value should be greater or equal to 1024"),
        (with(json!({"apiserver_port": 70000})), 400, "Invalid input for field/attribute apiserver_port. Value: '70000'. Value should be lower or equal to 65535"),
        (with(json!({"docker_volume_size": 0})), 400, "Invalid input for field/attribute docker_volume_size. Value: '0'. Value should be greater or equal to 1"),
        (with(json!({"docker_storage_driver": "devicemapper", "docker_volume_size": 1})), 400, "docker volume size 1 GB is not valid, expecting minimum value 3GB for devicemapper storage driver."),
        (with(json!({"docker_storage_driver": "devicemapper"})), 400, "docker volume size None GB is not valid, expecting minimum value 3GB for devicemapper storage driver."),
        (with(json!({"created_at": "garbage"})), 400, "Invalid input for field/attribute created_at. Value: 'garbage'. Wrong type. Expected '<class 'datetime.datetime'>'"),
        (with(json!({"dns_nameserver": "not-an-ip"})), 400, "Expected a single dns address or comma separated dns list, but received not-an-ip."),
        (with(json!({"bogus": "y"})), 400, "Unknown attribute for argument cluster_template: bogus"),
        (with(json!({"project_id": "p-9"})), 400, "Invalid input for field/attribute project_id. Value: 'p-9'. Cannot set read only field."),
        (with(json!({"tls_disabled": "maybe"})), 400, "Invalid input for field/attribute tls_disabled. Value: 'maybe'. Wrong type. Expected '<class 'bool'>', got '<class 'str'>'"),
        (with(json!({"name": ""})), 400, "Invalid input for field/attribute name. Value: ''. Value should have a minimum character requirement of 1"),
        (with(json!({"labels": {"a": {"nested": 1}}})), 400, "Invalid input for field/attribute labels. Value: '{'a': {'nested': 1}}'. Wrong type. Expected '(<class 'str'>, <class 'int'>, <class 'bool'>, <class 'float'>)'"),
        (with(json!({"public": true})), 403, "Not authorized to set public or hidden flag for cluster template."),
        (with(json!({"hidden": true})), 403, "Not authorized to set public or hidden flag for cluster template."),
        (json!([1, 2]), 400, "Invalid input for field/attribute cluster_template. Value: '[1, 2]'. Wrong type. Expected '<class 'dict'>', got '<class 'list'>'"),
        (Value::String("{\"coe\": ".to_owned()), 400, "Request is not in valid JSON format"),
    ];
    for (body, status, detail) in cases {
        let reply = app.post("/v1/clustertemplates", ALICE, body.clone()).await;
        assert_eq!(
            (reply.status, reply.detail()),
            (status, detail),
            "{}: {body}",
            engine.name()
        );
        assert_eq!(reply.body["errors"][0]["code"], "client");
        assert_eq!(
            reply.body["errors"][0]["title"],
            detail.split('.').next().unwrap()
        );
        assert_eq!(
            reply.header("openstack-api-version"),
            Some("container-infrastructure-management 1.1")
        );
    }
    let form = app
        .send(
            "POST",
            "/v1/clustertemplates",
            Some(ALICE),
            &[("Content-Type", "application/x-www-form-urlencoded")],
            Some(Value::String("coe=kubernetes".to_owned())),
        )
        .await;
    assert_eq!(
        (form.status, form.detail()),
        (400, "Unknown argument: \"coe\"")
    );
    let text = app
        .send(
            "POST",
            "/v1/clustertemplates",
            Some(ALICE),
            &[("Content-Type", "text/plain")],
            Some(base.to_string().into()),
        )
        .await;
    assert_eq!(
        (text.status, text.detail()),
        (415, "Unknown mimetype: text/plain")
    );
    let reader = app.post("/v1/clustertemplates", READER, base.clone()).await;
    assert_eq!(
        (reader.status, reader.detail()),
        (
            403,
            "Policy doesn't allow clustertemplate:create to be performed."
        )
    );
    let listed = app.get("/v1/clustertemplates", ADMIN).await;
    assert_eq!(
        listed.body["clustertemplates"],
        json!([]),
        "nothing refused was stored"
    );
    let admin_public = app
        .post(
            "/v1/clustertemplates",
            ADMIN,
            with(json!({"public": true, "hidden": true})),
        )
        .await;
    assert_eq!(admin_public.status, 201);
    app.stop().await;
}

engine_tests!(visibility_policy_and_identifiers);
async fn visibility_policy_and_identifiers(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let private = app.create_template(ALICE, json!({"name": "mine"})).await;
    let public = app
        .create_template(ADMIN, json!({"name": "shared", "public": true}))
        .await;
    let hidden = app
        .create_template(
            ADMIN,
            json!({"name": "secret", "public": true, "hidden": true}),
        )
        .await;
    let bobs = app.create_template(BOB, json!({"name": "mine"})).await;

    let names = |reply: &crate::support::Reply| -> Vec<String> {
        reply.body["clustertemplates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        names(&app.get("/v1/clustertemplates", ALICE).await),
        vec!["mine", "shared"]
    );
    assert_eq!(
        names(&app.get("/v1/clustertemplates/detail", BOB).await),
        vec!["shared", "mine"]
    );
    assert_eq!(
        names(&app.get("/v1/clustertemplates", ADMIN).await),
        vec!["mine", "shared", "secret", "mine"]
    );
    assert_eq!(
        names(&app.get("/v1/clustertemplates", READER).await),
        vec!["mine", "shared"]
    );
    let nobody = app.get("/v1/clustertemplates", NOBODY).await;
    assert_eq!(
        (nobody.status, nobody.detail()),
        (
            403,
            "Policy doesn't allow clustertemplate:get_all to be performed."
        )
    );

    let private_uuid = private["uuid"].as_str().unwrap();
    assert_eq!(
        app.get(&format!("/v1/clustertemplates/{private_uuid}"), ALICE)
            .await
            .status,
        200
    );
    assert_eq!(
        app.get("/v1/clustertemplates/mine", ALICE).await.body["uuid"],
        private["uuid"]
    );
    let others = app
        .get(&format!("/v1/clustertemplates/{private_uuid}"), BOB)
        .await;
    assert_eq!(
        (others.status, others.detail()),
        (
            404,
            format!("ClusterTemplate {private_uuid} could not be found.").as_str()
        )
    );
    assert_eq!(
        app.get(
            &format!("/v1/clustertemplates/{}", public["uuid"].as_str().unwrap()),
            BOB
        )
        .await
        .status,
        200
    );
    assert_eq!(
        app.get("/v1/clustertemplates/shared", NOBODY).await.status,
        200,
        "public templates are readable by all"
    );
    assert_eq!(
        app.get(
            &format!("/v1/clustertemplates/{}", hidden["uuid"].as_str().unwrap()),
            ALICE
        )
        .await
        .status,
        404
    );
    assert_eq!(
        app.get(
            &format!("/v1/clustertemplates/{}", hidden["uuid"].as_str().unwrap()),
            ADMIN
        )
        .await
        .status,
        200
    );
    let upper = private_uuid.to_uppercase().replace('-', "");
    assert_eq!(
        app.get(&format!("/v1/clustertemplates/{upper}"), ALICE)
            .await
            .status,
        200,
        "uuid-like forms resolve"
    );

    let ambiguous = app.get("/v1/clustertemplates/mine", ADMIN).await;
    assert_eq!((ambiguous.status, ambiguous.detail()), (409, "Multiple ClusterTemplates exist with same name. Please use the ClusterTemplate uuid instead."));
    assert_eq!(
        ambiguous.body["errors"][0]["title"],
        "Multiple ClusterTemplates exist with same name"
    );
    let missing = app.get("/v1/clustertemplates/nope", ALICE).await;
    assert_eq!(
        (missing.status, missing.detail()),
        (404, "ClusterTemplate nope could not be found.")
    );

    let foreign_public = app
        .patch(
            &format!("/v1/clustertemplates/{}", public["uuid"].as_str().unwrap()),
            BOB,
            json!([{"op": "replace", "path": "/name", "value": "x"}]),
        )
        .await;
    assert_eq!(
        (foreign_public.status, foreign_public.detail()),
        (
            403,
            "Policy doesn't allow clustertemplate:update to be performed."
        )
    );
    let foreign_delete = app
        .delete(&format!("/v1/clustertemplates/{private_uuid}"), BOB)
        .await;
    assert_eq!(foreign_delete.status, 404);
    let reader_delete = app
        .delete(&format!("/v1/clustertemplates/{private_uuid}"), READER)
        .await;
    assert_eq!(
        (reader_delete.status, reader_delete.detail()),
        (
            403,
            "Policy doesn't allow clustertemplate:delete to be performed."
        )
    );
    let admin_patch = app
        .patch(
            &format!("/v1/clustertemplates/{}", bobs["uuid"].as_str().unwrap()),
            ADMIN,
            json!([{"op": "replace", "path": "/name", "value": "bobs"}]),
        )
        .await;
    assert_eq!(admin_patch.status, 200);
    assert_eq!(
        admin_patch.body["project_id"], "p-0002",
        "an admin edit keeps the owner"
    );
    assert_eq!(
        app.delete(
            &format!("/v1/clustertemplates/{}", bobs["uuid"].as_str().unwrap()),
            ADMIN
        )
        .await
        .status,
        204
    );
    app.stop().await;
}

engine_tests!(patch_follows_upstream_semantics);
async fn patch_follows_upstream_semantics(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let template = app
        .create_template(ALICE, json!({"name": "p", "labels": {"kube_tag": "v1"}}))
        .await;
    let path = format!(
        "/v1/clustertemplates/{}",
        template["uuid"].as_str().unwrap()
    );
    let patch = |body: Value| {
        let app = &app;
        let path = path.clone();
        async move { app.patch(&path, ALICE, body).await }
    };

    let renamed = patch(json!([{"op": "replace", "path": "/name", "value": "renamed"}, {"op": "add", "path": "/labels/foo", "value": "bar"}])).await;
    assert_eq!(
        renamed.status,
        200,
        "{}",
        String::from_utf8_lossy(&renamed.raw)
    );
    assert_eq!(renamed.body["name"], "renamed");
    assert_eq!(
        renamed.body["labels"],
        json!({"kube_tag": "v1", "foo": "bar"})
    );
    assert!(renamed.body["updated_at"].is_string());

    let python_labels = patch(
        json!([{"op": "replace", "path": "/labels", "value": "{'a': 'b', 'n': 1, 't': True}"}]),
    )
    .await;
    assert_eq!(
        python_labels.body["labels"],
        json!({"a": "b", "n": "1", "t": "True"})
    );
    let json_labels = patch(
        json!([{"op": "replace", "path": "/labels", "value": "{\"a\": \"c\", \"t\": true}"}]),
    )
    .await;
    assert_eq!(json_labels.body["labels"], json!({"a": "c", "t": "True"}));
    let terraform_labels =
        patch(json!([{"op": "replace", "path": "/labels", "value": "a=b,c=d"}])).await;
    assert_eq!(terraform_labels.body["labels"], json!({"a": "b", "c": "d"}));
    let removed_label = patch(json!([{"op": "remove", "path": "/labels/c"}])).await;
    assert_eq!(removed_label.body["labels"], json!({"a": "b"}));

    let booleans = patch(json!([{"op": "replace", "path": "/master_lb_enabled", "value": "true"}, {"op": "replace", "path": "/floating_ip_enabled", "value": "false"}, {"op": "replace", "path": "/tls_disabled", "value": true}])).await;
    assert_eq!(
        (
            booleans.body["master_lb_enabled"].clone(),
            booleans.body["floating_ip_enabled"].clone(),
            booleans.body["tls_disabled"].clone()
        ),
        (json!(true), json!(false), json!(true))
    );
    let added = patch(json!([{"op": "add", "path": "/dns_nameserver", "value": "8.8.8.8"}, {"op": "replace", "path": "/docker_volume_size", "value": 20}, {"op": "replace", "path": "/tags", "value": "a,b"}])).await;
    assert_eq!(
        (
            added.body["dns_nameserver"].clone(),
            added.body["docker_volume_size"].clone()
        ),
        (json!("8.8.8.8"), json!(20))
    );
    let optional_removed = patch(json!([{"op": "remove", "path": "/dns_nameserver"}, {"op": "remove", "path": "/master_lb_enabled"}])).await;
    assert_eq!(optional_removed.body["dns_nameserver"], Value::Null);
    assert_eq!(optional_removed.body["master_lb_enabled"], false);
    let flavor =
        patch(json!([{"op": "replace", "path": "/flavor_id", "value": "local.medium"}])).await;
    assert_eq!(flavor.body["flavor_id"], "local.medium");

    let before = app.get(&path, ALICE).await.body;
    let errors: Vec<(Value, u16, String)> = vec![
        (json!({"op": "replace", "path": "/name", "value": "x"}), 400, "Invalid input for field/attribute patch. Value: '{'op': 'replace', 'path': '/name', 'value': 'x'}'. Value not a valid list: {'op': 'replace', 'path': '/name', 'value': 'x'}".to_owned()),
        (json!([{"op": "replace", "path": "/labels", "value": {"x": "z"}}]), 400, "Invalid input for field/attribute value. Value: '{'x': 'z'}'. Wrong type. Expected '(<class 'str'>, <class 'int'>)', got '<class 'dict'>'".to_owned()),
        (json!([{"op": "replace", "path": "/labels", "value": "{oops"}]), 400, "Couldn't apply patch '[{'path': '/labels', 'op': 'replace', 'value': '{oops'}]'. Reason: invalid syntax (<unknown>, line 1)".to_owned()),
        (json!([{"op": "add", "path": "/flavor_id", "value": "x"}]), 400, "The attribute /flavor_id has existed, please use 'replace' operation instead.".to_owned()),
        (json!([{"op": "add", "path": "/bogus", "value": "x"}]), 400, "Adding a new attribute /bogus to the root of the resource is not allowed.".to_owned()),
        (json!([{"op": "remove", "path": "/image_id"}]), 400, "'/image_id' is a mandatory attribute and can not be removed".to_owned()),
        (json!([{"op": "remove", "path": "/network_driver"}]), 400, "'/network_driver' is a mandatory attribute and can not be removed".to_owned()),
        (json!([{"op": "replace", "path": "/uuid", "value": "0b4e6b8c-1111-2222-3333-444455556666"}]), 400, "'/uuid' is an internal attribute and can not be updated".to_owned()),
        (json!([{"op": "replace", "path": "/project_id", "value": "p-2"}]), 400, "'/project_id' is an internal attribute and can not be updated".to_owned()),
        (json!([{"op": "replace", "path": "/name"}]), 400, "'add' and 'replace' operations needs value".to_owned()),
        (json!([{"op": "move", "path": "/name", "value": "x"}]), 400, "Invalid input for field/attribute op. Value: 'move'. Value should be one of: remove, add, replace".to_owned()),
        (json!([{"op": "remove", "path": "/nonexistent"}]), 400, "Couldn't apply patch '[{'path': '/nonexistent', 'op': 'remove'}]'. Reason: can't remove a non-existent object 'nonexistent'".to_owned()),
        (json!([{"op": "replace", "path": "/coe", "value": "swarm"}]), 400, "Invalid input for field/attribute coe. Value: 'swarm'. Value should be one of: kubernetes, swarm-mode".to_owned()),
        (json!([{"op": "replace", "path": "/coe", "value": "kubernetes"}]), 400, "Network driver type docker is not supported, expecting a flannel/calico/cilium/unspecified network driver.".to_owned()),
        (json!([{"op": "replace", "path": "/coe", "value": "kubernetes"}, {"op": "replace", "path": "/network_driver", "value": "flannel"}]), 400, "Cluster type (vm, local, kubernetes) is not supported by any loaded cluster driver. Loaded drivers support: local (vm, local, swarm-mode).".to_owned()),
        (json!([{"op": "replace", "path": "/docker_volume_size", "value": "20"}]), 400, "Invalid input for field/attribute docker_volume_size. Value: '20'. Wrong type. Expected '<class 'int'>', got '<class 'str'>'".to_owned()),
        (json!([{"op": "replace", "path": "/flavor_id", "value": "m1.huge"}]), 400, "Unable to find flavor m1.huge.".to_owned()),
        (json!([{"op": "replace", "path": "/network_driver", "value": "weave"}]), 400, "Network driver type weave is not supported, expecting a docker/unspecified network driver.".to_owned()),
        (json!([{"op": "replace", "path": "/public", "value": true}]), 403, "Not authorized to set public or hidden flag for cluster template.".to_owned()),
        (json!([{"op": "replace", "path": "/hidden", "value": "true"}]), 403, "Not authorized to set public or hidden flag for cluster template.".to_owned()),
        (json!([{"op": "replace", "path": "/tls_disabled", "value": "maybe"}]), 400, "Invalid input for field/attribute tls_disabled. Value: 'maybe'. Wrong type. Expected '<class 'bool'>', got '<class 'str'>'".to_owned()),
    ];
    for (body, status, detail) in errors {
        let reply = patch(body.clone()).await;
        assert_eq!(
            (reply.status, reply.detail()),
            (status, detail.as_str()),
            "{}: {body}",
            engine.name()
        );
    }
    assert_eq!(
        app.get(&path, ALICE).await.body,
        before,
        "refused patches change nothing"
    );
    let bad_body_missing = app
        .patch(
            "/v1/clustertemplates/0b4e6b8c-1111-2222-3333-444455556666",
            ALICE,
            json!({"not": "a list"}),
        )
        .await;
    assert_eq!(
        bad_body_missing.status, 400,
        "the body is checked before the lookup"
    );
    let empty = patch(json!([])).await;
    assert_eq!((empty.status, empty.body.clone()), (200, before.clone()));

    let admin_publish = app
        .patch(
            &path,
            ADMIN,
            json!([{"op": "replace", "path": "/public", "value": true}]),
        )
        .await;
    assert_eq!(
        (admin_publish.status, admin_publish.body["public"].clone()),
        (200, json!(true))
    );
    app.stop().await;
}

engine_tests!(templates_in_use_cannot_change_or_go);
async fn templates_in_use_cannot_change_or_go(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let template = app.create_template(ALICE, json!({"name": "used"})).await;
    let uuid = template["uuid"].as_str().unwrap();
    let path = format!("/v1/clustertemplates/{uuid}");
    app.insert_cluster_using(uuid, "p-0001").await;
    let referenced = format!("ClusterTemplate {uuid} is referenced by one or multiple clusters.");

    let flavor = app
        .patch(
            &path,
            ALICE,
            json!([{"op": "replace", "path": "/flavor_id", "value": "local.medium"}]),
        )
        .await;
    assert_eq!(
        (flavor.status, flavor.detail()),
        (400, referenced.as_str()),
        "{}",
        engine.name()
    );
    let rename = app
        .patch(
            &path,
            ALICE,
            json!([{"op": "replace", "path": "/name", "value": "again"}]),
        )
        .await;
    assert_eq!(rename.status, 200);
    let tags = app
        .patch(
            &path,
            ALICE,
            json!([{"op": "replace", "path": "/tags", "value": "x"}]),
        )
        .await;
    assert_eq!(tags.status, 200);
    let publish = app
        .patch(
            &path,
            ADMIN,
            json!([{"op": "replace", "path": "/public", "value": true}]),
        )
        .await;
    assert_eq!(publish.status, 200);
    let unpublish = app
        .patch(
            &path,
            ADMIN,
            json!([{"op": "replace", "path": "/public", "value": false}]),
        )
        .await;
    assert_eq!(
        (unpublish.status, unpublish.detail()),
        (400, referenced.as_str())
    );
    let hide = app
        .patch(
            &path,
            ADMIN,
            json!([{"op": "replace", "path": "/hidden", "value": true}]),
        )
        .await;
    assert_eq!(hide.status, 200);
    let two = app.patch(&path, ADMIN, json!([{"op": "replace", "path": "/name", "value": "x"}, {"op": "replace", "path": "/tags", "value": "y"}])).await;
    assert_eq!(two.status, 400);

    let delete = app.delete(&path, ALICE).await;
    assert_eq!((delete.status, delete.detail()), (400, referenced.as_str()));
    assert_eq!(app.get(&path, ALICE).await.status, 200);

    let unused = app.create_template(ALICE, json!({"name": "unused"})).await;
    let unused_path = format!("/v1/clustertemplates/{}", unused["uuid"].as_str().unwrap());
    let deleted = app.delete("/v1/clustertemplates/unused", ALICE).await;
    assert_eq!(deleted.status, 204);
    assert!(deleted.raw.is_empty());
    assert!(deleted.header("content-type").is_none());
    assert_eq!(
        deleted.header("openstack-api-version"),
        Some("container-infrastructure-management 1.1")
    );
    let again = app.delete(&unused_path, ALICE).await;
    assert_eq!(again.status, 404);
    app.stop().await;
}

engine_tests!(pagination_links_and_limits);
async fn pagination_links_and_limits(engine: Engine) {
    let app = TestApp::spawn_with(engine, magnumd::Role::All, |config| {
        config.api.max_limit = 3
    })
    .await;
    let mut uuids = Vec::new();
    for name in ["e", "b", "d", "a", "c"] {
        uuids.push(
            app.create_template(ALICE, json!({"name": name})).await["uuid"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let first = app.get("/v1/clustertemplates?limit=2", ALICE).await;
    assert_eq!(first.body["clustertemplates"].as_array().unwrap().len(), 2);
    assert_eq!(
        first.body["next"],
        format!(
            "{}/v1/clustertemplates?sort_key=id&sort_dir=asc&limit=2&marker={}",
            app.base_url, uuids[1]
        )
    );
    let next = first.body["next"]
        .as_str()
        .unwrap()
        .replace(&app.base_url, "");
    let second = app.get(&next, ALICE).await;
    let names: Vec<&str> = second.body["clustertemplates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["d", "a"]);

    let capped = app
        .get("/v1/clustertemplates/detail?limit=5000", ALICE)
        .await;
    assert_eq!(
        capped.body["clustertemplates"].as_array().unwrap().len(),
        3,
        "limit is capped at max_limit"
    );
    assert!(capped.body["next"]
        .as_str()
        .unwrap()
        .contains("/v1/clustertemplates/detail?sort_key=id&sort_dir=asc&limit=3&marker="));
    let implicit = app.get("/v1/clustertemplates", ALICE).await;
    assert_eq!(
        implicit.body["clustertemplates"].as_array().unwrap().len(),
        3
    );
    assert!(
        implicit.body.get("next").is_some(),
        "a full default page has a next link"
    );

    let sorted = app
        .get(
            "/v1/clustertemplates?sort_key=name&sort_dir=desc&limit=3",
            ALICE,
        )
        .await;
    let names: Vec<&str> = sorted.body["clustertemplates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["e", "d", "c"]);
    let last_page = app
        .get(
            &format!(
                "/v1/clustertemplates?sort_key=name&sort_dir=desc&limit=3&marker={}",
                uuids[4]
            ),
            ALICE,
        )
        .await;
    let names: Vec<&str> = last_page.body["clustertemplates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["b", "a"]);
    assert!(
        last_page.body.get("next").is_none(),
        "no next link on a partial page"
    );

    for (query, detail) in [
        ("limit=0", "Limit must be positive"),
        ("limit=abc", "Invalid input for field/attribute limit. Value: 'abc'. unable to convert to int. Error: invalid literal for int() with base 10: 'abc'"),
        ("marker=notauuid", "Invalid input for field/attribute marker. Value: 'notauuid'. unable to convert to uuid. Error: Expected a uuid but received notauuid."),
        ("sort_dir=up", "Invalid sort direction: up. Acceptable values are 'asc' or 'desc'"),
        ("sort_key=nope", "The sort_key value \"nope\" is an invalid field for sorting"),
    ] {
        let reply = app.get(&format!("/v1/clustertemplates?{query}"), ALICE).await;
        assert_eq!((reply.status, reply.detail()), (400, detail), "{query}");
    }
    let unknown_marker = app
        .get(
            "/v1/clustertemplates?marker=0b4e6b8c-1111-2222-3333-444455556666",
            ALICE,
        )
        .await;
    assert_eq!(
        (unknown_marker.status, unknown_marker.detail()),
        (
            404,
            "ClusterTemplate 0b4e6b8c-1111-2222-3333-444455556666 could not be found."
        )
    );
    app.stop().await;
}

engine_tests!(mservices_report_conductor_heartbeats);
async fn mservices_report_conductor_heartbeats(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let member = app.get("/v1/mservices", ALICE).await;
    assert_eq!(
        (member.status, member.detail()),
        (
            403,
            "Policy doesn't allow magnum-service:get_all to be performed."
        )
    );
    let mut report_count = 0;
    for _ in 0..50 {
        let reply = app.get("/v1/mservices", ADMIN).await;
        assert_eq!(reply.status, 200);
        let services = reply.body["mservices"].as_array().unwrap();
        assert_eq!(services.len(), 1);
        let service = &services[0];
        assert_eq!(
            keys(service),
            vec![
                "host",
                "binary",
                "state",
                "id",
                "report_count",
                "disabled",
                "disabled_reason",
                "created_at",
                "updated_at"
            ]
        );
        assert_eq!(service["binary"], "magnum-conductor");
        assert_eq!(service["host"], format!("conductor-{}", engine.name()));
        assert_eq!(service["state"], "up");
        assert_eq!(service["id"], 1);
        report_count = service["report_count"].as_i64().unwrap();
        if report_count >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(report_count >= 2, "the heartbeat keeps counting");
    assert_eq!(app.get("/v1/mservices?all=1", ADMIN).await.status, 400);
    app.stop().await;

    // An API without a live conductor reports the last one down once it is silent.
    let api_only = TestApp::spawn_with(engine, magnumd::Role::Api, |config| {
        config.api.service_down_time = 1
    })
    .await;
    let store = magnum_store::Store::connect(&api_only.database_url, 1)
        .await
        .unwrap();
    let long_ago = magnum_domain::time::Timestamp::from_unix_seconds(
        magnum_domain::time::Timestamp::now().unix_seconds() - 600,
    );
    store
        .record_service_heartbeat("gone", "magnum-conductor", long_ago)
        .await
        .unwrap();
    store.close().await;
    let reply = api_only.get("/v1/mservices", ADMIN).await;
    assert_eq!(reply.body["mservices"][0]["state"], "down");
    api_only.stop().await;
}

engine_tests!(cached_reads_see_every_write_from_every_process_and_keep_policy);
async fn cached_reads_see_every_write_from_every_process_and_keep_policy(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let (peer, peer_api) = app.start_peer_api().await;
    let template = app.create_template(ALICE, json!({"name": "cached"})).await;
    let uuid = template["uuid"].as_str().unwrap();
    let path = format!("/v1/clustertemplates/{uuid}");
    for _ in 0..2 {
        let (status, body) = peer_api.get(&path, ALICE).await;
        assert_eq!((status, body["name"].clone()), (200, json!("cached")));
        let (_, list) = peer_api.get("/v1/clustertemplates", ALICE).await;
        assert_eq!(list["clustertemplates"].as_array().unwrap().len(), 1);
    }
    let renamed = app
        .patch(
            &path,
            ALICE,
            json!([{"op": "replace", "path": "/name", "value": "renamed"}]),
        )
        .await;
    assert_eq!(renamed.status, 200);
    let (_, body) = peer_api.get(&path, ALICE).await;
    assert_eq!(
        body["name"],
        "renamed",
        "{}: the peer sees the write at once",
        engine.name()
    );
    let (_, list) = peer_api.get("/v1/clustertemplates", ALICE).await;
    assert_eq!(list["clustertemplates"][0]["name"], "renamed");

    let (reader_status, _) = peer_api.get(&path, READER).await;
    assert_eq!(reader_status, 200);
    let (nobody_status, body) = peer_api.get(&path, NOBODY).await;
    assert_eq!(
        nobody_status, 403,
        "a cached body is still guarded by policy: {body}"
    );
    let (other_status, _) = peer_api.get(&path, BOB).await;
    assert_eq!(other_status, 404);

    assert_eq!(app.delete(&path, ALICE).await.status, 204);
    let (status, _) = peer_api.get(&path, ALICE).await;
    assert_eq!(status, 404);
    let (_, list) = peer_api.get("/v1/clustertemplates", ALICE).await;
    assert_eq!(list["clustertemplates"], json!([]));
    peer.stop().await;
    app.stop().await;
}

engine_tests!(hostile_input_gets_a_4xx_and_changes_nothing, multi_thread);
async fn hostile_input_gets_a_4xx_and_changes_nothing(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let template = app
        .create_template(ALICE, json!({"name": "h", "labels": {"keep": "me"}}))
        .await;
    let path = format!(
        "/v1/clustertemplates/{}",
        template["uuid"].as_str().unwrap()
    );
    let before = app.get(&path, ALICE).await.body;

    let deep = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
    let long = format!("{{'k': {}}}", "'a'".repeat(4_000));
    for value in [deep, "{'a': 'x=y'".to_owned()] {
        let reply = app
            .patch(
                &path,
                ALICE,
                json!([{"op": "replace", "path": "/labels", "value": value}]),
            )
            .await;
        assert_eq!(reply.status, 400, "{}", engine.name());
        assert!(
            reply.detail().starts_with("Couldn't apply patch"),
            "{}",
            reply.detail()
        );
    }
    let concatenated = app
        .patch(
            &path,
            ALICE,
            json!([{"op": "replace", "path": "/labels", "value": long}]),
        )
        .await;
    assert_eq!(
        concatenated.status, 200,
        "adjacent literals join, as in Python"
    );
    let restored = app
        .patch(
            &path,
            ALICE,
            json!([{"op": "replace", "path": "/labels", "value": "{'keep': 'me'}"}]),
        )
        .await;
    assert_eq!(restored.status, 200);

    let nul_body = app
        .patch(
            &path,
            ALICE,
            json!([{"op": "replace", "path": "/name", "value": "a\u{0}b"}]),
        )
        .await;
    assert_eq!(nul_body.status, 400, "{}", engine.name());
    let nul_label = app
        .post(
            "/v1/clustertemplates",
            ALICE,
            json!({"coe": "swarm-mode", "image_id": "local-node", "labels": {"k\u{0}": "v"}}),
        )
        .await;
    assert_eq!(nul_label.status, 400);
    assert_eq!(
        app.get("/v1/clustertemplates/a%00b", ALICE).await.status,
        400
    );
    assert_eq!(
        app.get("/v1/clustertemplates?marker=%00", ALICE)
            .await
            .status,
        400
    );

    let distro = app
        .patch(
            &path,
            ALICE,
            json!([{"op": "replace", "path": "/cluster_distro", "value": "ubuntu"}]),
        )
        .await;
    assert_eq!((distro.status, distro.detail()), (400, "cluster_distro is the os_distro of the template's image: image local-node has os_distro local."));
    let two_versions = app
        .send(
            "GET",
            &path,
            Some(ALICE),
            &[
                ("OpenStack-API-Version", "container-infra 1.5"),
                ("OpenStack-API-Version", "container-infra 1.6"),
            ],
            None,
        )
        .await;
    assert_eq!(two_versions.status, 406);
    let huge_version = app
        .send(
            "GET",
            &path,
            Some(ALICE),
            &[("OpenStack-API-Version", "container-infra 1.4294967296")],
            None,
        )
        .await;
    assert_eq!(huge_version.status, 406);
    assert_eq!(
        huge_version.header("openstack-api-version"),
        Some("container-infrastructure-management 1.4294967296")
    );
    assert_eq!(
        app.get("/v1/clustertemplates?limit=99999999999999999999", ALICE)
            .await
            .status,
        200
    );

    assert_eq!(app.get(&path, ALICE).await.body["labels"], before["labels"]);
    assert_eq!(app.get(&path, ALICE).await.body["name"], before["name"]);

    // Concurrent updates of one template all land.
    let mut updates = Vec::new();
    for index in 0..16 {
        let body = json!([{"op": "add", "path": format!("/labels/k{index}"), "value": "v"}]);
        updates.push(app.patch(&path, ALICE, body));
    }
    for reply in futures_join(updates).await {
        assert_eq!(reply.status, 200, "{}: {}", engine.name(), reply.detail());
    }
    let labels = app.get(&path, ALICE).await.body["labels"].clone();
    assert_eq!(labels.as_object().unwrap().len(), 17, "{labels}");
    app.stop().await;
}

async fn futures_join<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut outputs = Vec::new();
    let pinned: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut pending: Vec<_> = pinned.into_iter().map(Some).collect();
    // Poll all of them together so the requests overlap.
    let results = std::sync::Mutex::new(Vec::new());
    std::future::poll_fn(|context| {
        let mut all_done = true;
        for (index, slot) in pending.iter_mut().enumerate() {
            if let Some(future) = slot {
                match future.as_mut().poll(context) {
                    std::task::Poll::Ready(output) => {
                        results.lock().unwrap().push((index, output));
                        *slot = None;
                    }
                    std::task::Poll::Pending => all_done = false,
                }
            }
        }
        if all_done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(index, _)| *index);
    outputs.extend(results.into_iter().map(|(_, output)| output));
    outputs
}

engine_tests!(deployments_under_a_path_prefix);
async fn deployments_under_a_path_prefix(engine: Engine) {
    let app = TestApp::spawn_with(engine, magnumd::Role::All, |config| {
        config.api.path_prefix = "/container-infra".to_owned();
        config.api.enable_proxy_headers_parsing = true;
    })
    .await;
    let created = app
        .send(
            "POST",
            "/container-infra/v1/clustertemplates",
            Some(ALICE),
            &[],
            Some(json!({"coe": "swarm-mode", "image_id": "local-node"})),
        )
        .await;
    assert_eq!(created.status, 201);
    let uuid = created.body["uuid"].as_str().unwrap();
    assert_eq!(
        created.header("location").unwrap(),
        format!(
            "{}/container-infra/v1/clustertemplates/{uuid}",
            app.base_url
        )
    );
    assert_eq!(
        created.body["links"][1]["href"],
        format!("{}/container-infra/clustertemplates/{uuid}", app.base_url)
    );
    let listed = app
        .get("/container-infra/v1/clustertemplates?limit=1", ALICE)
        .await;
    assert!(listed.body["next"].as_str().unwrap().starts_with(&format!(
        "{}/container-infra/v1/clustertemplates?",
        app.base_url
    )));
    let root = app.send("GET", "/container-infra/", None, &[], None).await;
    assert_eq!(
        root.body["versions"][0]["links"][0]["href"],
        format!("{}/container-infra/v1/", app.base_url)
    );
    let unprefixed = app.get("/v1/clustertemplates", ALICE).await;
    assert_eq!(
        unprefixed.status, 200,
        "the API stays reachable without the prefix"
    );

    let forwarded = app
        .send(
            "GET",
            &format!("/v1/clustertemplates/{uuid}"),
            Some(ALICE),
            &[
                ("X-Forwarded-Prefix", "/magnum"),
                ("X-Forwarded-Proto", "https"),
                ("X-Forwarded-Host", "cloud.example.org"),
            ],
            None,
        )
        .await;
    assert_eq!(
        forwarded.body["links"][0]["href"],
        format!("https://cloud.example.org/magnum/v1/clustertemplates/{uuid}")
    );
    app.stop().await;
}

#[tokio::test]
async fn an_operator_policy_file_overrides_the_defaults() {
    let directory = tempfile::tempdir().unwrap();
    let file = directory.path().join("policy.yaml");
    std::fs::write(
        &file,
        "# only admins create templates here\n\"clustertemplate:create\": \"rule:context_is_admin\"\n'clustertemplate:get_all': 'role:reader or role:auditor'\n",
    )
    .unwrap();
    let engine = crate::support::engines()[0];
    let app = TestApp::spawn_with(engine, magnumd::Role::All, |config| {
        config.auth.policy_file = Some(file.clone());
    })
    .await;
    let body = serde_json::json!({"coe": "swarm-mode", "image_id": "local-node", "external_network_id": "local"});
    let refused = app.post("/v1/clustertemplates", ALICE, body.clone()).await;
    assert_eq!(
        (refused.status, refused.detail()),
        (
            403,
            "Policy doesn't allow clustertemplate:create to be performed."
        )
    );
    assert_eq!(
        app.post("/v1/clustertemplates", ADMIN, body).await.status,
        201
    );
    let auditor = crate::support::Caller {
        project_id: "p-0001",
        user_id: "u-audit",
        roles: "auditor",
    };
    assert_eq!(app.get("/v1/clustertemplates", auditor).await.status, 200);
    app.stop().await;
    // A broken file stops start-up with the file named.
    std::fs::write(&file, "\"cluster:create\": \"role:admin and (\"\n").unwrap();
    let mut config = magnumd::Config::default();
    config.auth.policy_file = Some(file.clone());
    let error = config.check().unwrap_err().to_string();
    assert!(error.contains("auth.policy_file"), "{error}");
}

engine_tests!(
    escapes_decoded_from_python_literals_cannot_smuggle_nul_or_unknown_names,
    multi_thread
);
async fn escapes_decoded_from_python_literals_cannot_smuggle_nul_or_unknown_names(engine: Engine) {
    const NUL_REFUSED: &str =
        "Invalid input: the request contains a NUL character, which no attribute may hold.";
    let app = TestApp::spawn(engine).await;
    let template = app
        .create_template(ALICE, json!({"name": "esc", "labels": {"keep": "me"}}))
        .await;
    let path = format!(
        "/v1/clustertemplates/{}",
        template["uuid"].as_str().unwrap()
    );
    let before = app.get(&path, ALICE).await.body;
    // Each escape spells NUL only once decoded: the request itself holds none.
    for value in [
        r"{'keep': 'a\x00b'}",
        r"{'keep': 'a\0b'}",
        r"{'keep': 'a\u0000b'}",
        r"{'keep': 'a\U00000000b'}",
        r"{'k\000': 'v'}",
        r#"{"keep": "a\u0000b"}"#,
    ] {
        let reply = app
            .patch(
                &path,
                ALICE,
                json!([{"op": "replace", "path": "/labels", "value": value}]),
            )
            .await;
        assert_eq!(
            (reply.status, reply.detail()),
            (400, NUL_REFUSED),
            "{}: {value}",
            engine.name()
        );
        assert_eq!(reply.body["errors"][0]["code"], "client");
    }
    let bogus = app
        .patch(
            &path,
            ALICE,
            json!([{"op": "replace", "path": "/labels", "value": r"{'keep': '\N{BOGUS}'}"}]),
        )
        .await;
    assert_eq!(bogus.status, 400, "{}", engine.name());
    assert_eq!(
        bogus.detail(),
        r#"Couldn't apply patch '[{'path': '/labels', 'op': 'replace', 'value': "{'keep': '\\N{BOGUS}'}"}]'. Reason: (unicode error) 'unicodeescape' codec can't decode bytes in position 0-8: unknown Unicode character name (<unknown>, line 1)"#
    );
    let after = app.get(&path, ALICE).await.body;
    assert_eq!(after["labels"], json!({"keep": "me"}), "{}", engine.name());
    assert_eq!(after["updated_at"], before["updated_at"]);
    // Escapes that decode to something storable still work.
    let tab = app
        .patch(
            &path,
            ALICE,
            json!([{"op": "replace", "path": "/labels", "value": r"{'keep': 'a\tb\x41'}"}]),
        )
        .await;
    assert_eq!(tab.status, 200, "{}", tab.detail());
    assert_eq!(tab.body["labels"], json!({"keep": "a\tbA"}));
    app.stop().await;
}
