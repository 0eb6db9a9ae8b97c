//! What the driver writes for a cluster: the CAPI Cluster with its topology, the CA and
//! credential secrets, and the ClusterClass, for representative templates and clusters.

mod fixtures;

use fixtures::*;
use magnum_domain::cluster::ClusterStatus;
use magnum_driver_capi::class;
use magnum_driver_capi::names::CaPurpose;
use magnum_driver_capi::render::{self, ApplicationCredential, ClusterInput, KeyPair, RenderError};
use serde_json::{json, Value};

fn variables(cluster: &Value) -> serde_json::Map<String, Value> {
    cluster["spec"]["topology"]["variables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|variable| {
            (
                variable["name"].as_str().unwrap().to_owned(),
                variable["value"].clone(),
            )
        })
        .collect()
}

#[test]
fn a_default_cluster_becomes_a_topology_of_the_class() {
    let template = template();
    let cluster = cluster(&template);
    let nodegroups = default_nodegroups(&cluster);
    let resolved = resolved();
    let rendered = render::render_cluster(
        &settings(),
        ClusterInput {
            cluster: &cluster,
            template: &template,
            nodegroups: &nodegroups,
            resolved: &resolved,
            rollout_after: None,
        },
    )
    .unwrap();
    assert_eq!(rendered["apiVersion"], "cluster.x-k8s.io/v1beta2");
    assert_eq!(rendered["metadata"]["name"], "kube-5d12f6fda1964bf0");
    assert_eq!(rendered["metadata"]["namespace"], "magnum-system");
    let labels = &rendered["metadata"]["labels"];
    assert_eq!(
        labels["magnum.openstack.org/cluster-uuid"],
        cluster.uuid.to_string()
    );
    assert_eq!(labels["magnum-rs.openstack.org/cni"], "calico");
    assert_eq!(labels["magnum-rs.openstack.org/csi"], "cinder");
    let topology = &rendered["spec"]["topology"];
    assert_eq!(topology["classRef"]["name"], "magnum-rs-v1");
    assert_eq!(topology["version"], "v1.33.5");
    assert_eq!(topology["controlPlane"]["replicas"], 3);
    assert_eq!(topology["controlPlane"]["healthCheck"]["enabled"], true);
    assert!(topology["controlPlane"].get("rollout").is_none());
    let deployments = topology["workers"]["machineDeployments"]
        .as_array()
        .unwrap();
    assert_eq!(deployments.len(), 1);
    assert_eq!(deployments[0]["name"], "default-worker");
    assert_eq!(deployments[0]["class"], "default-worker");
    assert_eq!(deployments[0]["replicas"], 2);
    let variables = variables(&rendered);
    assert_eq!(variables["imageUUID"], IMAGE);
    assert_eq!(variables["controlPlaneFlavor"], "m1.large");
    assert_eq!(variables["flavor"], "m1.medium");
    assert_eq!(
        variables["externalNetwork"],
        json!({"id": EXTERNAL_NETWORK})
    );
    assert_eq!(variables["network"], json!({"id": ""}));
    assert_eq!(
        variables["managedSubnets"],
        json!([{"cidr": "10.0.0.0/24", "dnsNameservers": ["8.8.8.8"]}])
    );
    assert_eq!(
        variables["identityRefName"],
        "kube-5d12f6fda1964bf0-cloud-config"
    );
    assert_eq!(variables["apiServerLoadBalancer"], true);
    assert_eq!(variables["disableAPIServerFloatingIP"], false);
    assert_eq!(variables["sshKeyName"], "ops");
    assert_eq!(variables["rootVolume"], json!({"sizeGiB": 0}));
    assert_eq!(variables["operatingSystem"], "ubuntu");
    assert_eq!(
        rendered["spec"]["clusterNetwork"],
        json!({"pods": {"cidrBlocks": ["10.100.0.0/16"]},
               "services": {"cidrBlocks": ["10.254.0.0/16"]},
               "serviceDomain": "cluster.local"})
    );
    // Every variable the class declares is set, so no enabledIf meets a missing key.
    for (name, _, _) in class::variable_schemas() {
        assert!(variables.contains_key(name), "{name}");
    }
    assert_eq!(variables.len(), class::variable_schemas().len());
}

#[test]
fn nodegroups_map_to_deployments_with_their_own_settings() {
    let template = template();
    let mut cluster = cluster(&template);
    cluster.labels.insert("auto_healing_enabled", "false");
    let mut nodegroups = default_nodegroups(&cluster);
    let mut gpu = nodegroup(&cluster, "GPU nodes", "worker", 1, 3);
    gpu.flavor_id = Some("5c3a".to_owned());
    gpu.image_id = Some("ubuntu-2404-kube-v1.34".to_owned());
    gpu.labels.insert("availability_zone", "az-2");
    gpu.labels.insert("boot_volume_size", "100");
    gpu.labels.insert("boot_volume_type", "ssd");
    nodegroups.push(gpu);
    let mut leaving = nodegroup(&cluster, "old", "worker", 4, 4);
    leaving.status = ClusterStatus::DeleteInProgress;
    nodegroups.push(leaving);
    let resolved = resolved();
    let rendered = render::render_cluster(
        &settings(),
        ClusterInput {
            cluster: &cluster,
            template: &template,
            nodegroups: &nodegroups,
            resolved: &resolved,
            rollout_after: Some("2026-11-26T07:00:00Z"),
        },
    )
    .unwrap();
    let topology = &rendered["spec"]["topology"];
    assert_eq!(topology["controlPlane"]["healthCheck"]["enabled"], false);
    assert_eq!(
        topology["controlPlane"]["rollout"]["after"],
        "2026-11-26T07:00:00Z"
    );
    let deployments = topology["workers"]["machineDeployments"]
        .as_array()
        .unwrap();
    let names: Vec<&str> = deployments
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["default-worker", "gpu-nodes-03030303"],
        "the leaving one is dropped"
    );
    let gpu = &deployments[1];
    assert_eq!(gpu["failureDomain"], "az-2");
    assert_eq!(gpu["replicas"], 1);
    assert_eq!(gpu["rollout"]["after"], "2026-11-26T07:00:00Z");
    assert_eq!(
        gpu["metadata"]["labels"]["node.cluster.x-k8s.io/magnum-nodegroup"],
        "gpu-nodes-03030303"
    );
    assert_eq!(
        gpu["variables"]["overrides"],
        json!([
            {"name": "flavor", "value": "g1.gpu"},
            {"name": "imageUUID", "value": NEW_IMAGE},
            {"name": "rootVolume", "value": {"sizeGiB": 100, "type": "ssd"}},
        ])
    );
}

#[test]
fn autoscaled_nodegroups_leave_the_count_to_the_autoscaler() {
    let template = template();
    let mut cluster = cluster(&template);
    cluster.labels.insert("auto_scaling_enabled", "true");
    let mut nodegroups = default_nodegroups(&cluster);
    nodegroups[1].min_node_count = 1;
    nodegroups[1].max_node_count = Some(7);
    let resolved = resolved();
    let rendered = render::render_cluster(
        &settings(),
        ClusterInput {
            cluster: &cluster,
            template: &template,
            nodegroups: &nodegroups,
            resolved: &resolved,
            rollout_after: None,
        },
    )
    .unwrap();
    let deployment = &rendered["spec"]["topology"]["workers"]["machineDeployments"][0];
    assert!(deployment.get("replicas").is_none(), "{deployment}");
    let annotations = &deployment["metadata"]["annotations"];
    assert_eq!(
        annotations["cluster.x-k8s.io/cluster-api-autoscaler-node-group-min-size"],
        "1"
    );
    assert_eq!(
        annotations["cluster.x-k8s.io/cluster-api-autoscaler-node-group-max-size"],
        "7"
    );
}

#[test]
fn a_fixed_network_replaces_the_managed_subnet() {
    let template = template();
    let cluster = cluster(&template);
    let nodegroups = default_nodegroups(&cluster);
    let mut resolved = resolved();
    resolved.fixed_network_id = Some(FIXED_NETWORK.to_owned());
    resolved.fixed_subnet_id = Some(FIXED_SUBNET.to_owned());
    resolved.external_network_id = None;
    let rendered = render::render_cluster(
        &settings(),
        ClusterInput {
            cluster: &cluster,
            template: &template,
            nodegroups: &nodegroups,
            resolved: &resolved,
            rollout_after: None,
        },
    )
    .unwrap();
    let variables = variables(&rendered);
    assert_eq!(variables["network"], json!({"id": FIXED_NETWORK}));
    assert_eq!(variables["subnets"], json!([{"id": FIXED_SUBNET}]));
    assert_eq!(variables["managedSubnets"], json!([]));
    assert_eq!(variables["externalNetwork"], json!({"id": ""}));
}

#[test]
fn bad_labels_are_refused_with_the_label_named() {
    let cases: &[(&str, &str, &str)] = &[
        ("kube_tag", "latest", "Invalid label kube_tag=\"latest\""),
        ("kube_tag", "v1.33", "Invalid label kube_tag=\"v1.33\""),
        (
            "calico_ipv4pool",
            "10.0.0.0/33",
            "Invalid label calico_ipv4pool",
        ),
        (
            "calico_ipv4pool",
            "10.0.0.0",
            "Invalid label calico_ipv4pool",
        ),
        (
            "service_cluster_ip_range",
            "a/b",
            "Invalid label service_cluster_ip_range",
        ),
        (
            "dns_cluster_domain",
            "Bad_Domain",
            "Invalid label dns_cluster_domain",
        ),
        ("boot_volume_size", "-1", "Invalid label boot_volume_size"),
        (
            "boot_volume_size",
            "99999999",
            "Invalid label boot_volume_size",
        ),
        (
            "auto_healing_enabled",
            "maybe",
            "Invalid label auto_healing_enabled",
        ),
        (
            "control_plane_availability_zones",
            &"a,".repeat(17),
            "Invalid label control_plane_availability_zones",
        ),
    ];
    let template = template();
    let resolved = resolved();
    for (label, value, message) in cases {
        let mut cluster = cluster(&template);
        cluster.labels.insert(label, value);
        let nodegroups = default_nodegroups(&cluster);
        let error = render::render_cluster(
            &settings(),
            ClusterInput {
                cluster: &cluster,
                template: &template,
                nodegroups: &nodegroups,
                resolved: &resolved,
                rollout_after: None,
            },
        )
        .unwrap_err();
        assert!(
            error.to_string().starts_with(message),
            "{label}={value}: {error}"
        );
    }
    let mut bad_driver = template.clone();
    bad_driver.network_driver = Some("weave".to_owned());
    let cluster = cluster(&bad_driver);
    let nodegroups = default_nodegroups(&cluster);
    let error = render::render_cluster(
        &settings(),
        ClusterInput {
            cluster: &cluster,
            template: &bad_driver,
            nodegroups: &nodegroups,
            resolved: &resolved,
            rollout_after: None,
        },
    )
    .unwrap_err();
    assert!(error.to_string().contains("network_driver"), "{error}");
}

#[test]
fn unresolved_references_and_clashing_names_are_refused() {
    let template = template();
    let mut cluster = cluster(&template);
    cluster.flavor_id = Some("m9.missing".to_owned());
    let nodegroups = default_nodegroups(&cluster);
    let resolved = resolved();
    let error = render::render_cluster(
        &settings(),
        ClusterInput {
            cluster: &cluster,
            template: &template,
            nodegroups: &nodegroups,
            resolved: &resolved,
            rollout_after: None,
        },
    )
    .unwrap_err();
    assert_eq!(
        error,
        RenderError::Unresolved {
            what: "flavor",
            reference: "m9.missing".to_owned()
        }
    );

    let cluster = fixtures::cluster(&template);
    let mut nodegroups = default_nodegroups(&cluster);
    // Two free-text names that clean up to the same label, with the same uuid prefix.
    let mut first = nodegroup(&cluster, "GPU", "worker", 1, 5);
    let mut second = nodegroup(&cluster, "gpu!", "worker", 1, 5);
    first.uuid = uuid::Uuid::from_bytes([5; 16]);
    second.uuid = uuid::Uuid::from_bytes([5; 16]);
    nodegroups.push(first);
    nodegroups.push(second);
    let error = render::render_cluster(
        &settings(),
        ClusterInput {
            cluster: &cluster,
            template: &template,
            nodegroups: &nodegroups,
            resolved: &resolved,
            rollout_after: None,
        },
    )
    .unwrap_err();
    assert!(
        matches!(error, RenderError::NodegroupNameClash { .. }),
        "{error}"
    );
}

#[test]
fn ca_secrets_are_what_capi_reads_instead_of_making_its_own() {
    use base64::Engine;
    let template = template();
    let cluster = cluster(&template);
    let pair = KeyPair {
        cert_pem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".to_owned(),
        key_pem: "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n".to_owned(),
    };
    let names: Vec<String> = CaPurpose::ALL
        .iter()
        .map(|purpose| {
            let secret = render::render_ca_secret(&settings(), &cluster, *purpose, &pair);
            assert_eq!(secret["type"], "cluster.x-k8s.io/secret");
            assert_eq!(
                secret["metadata"]["labels"]["cluster.x-k8s.io/cluster-name"],
                "kube-5d12f6fda1964bf0"
            );
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(secret["data"]["tls.key"].as_str().unwrap())
                .unwrap();
            assert_eq!(String::from_utf8(decoded).unwrap(), pair.key_pem);
            secret["metadata"]["name"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        names,
        [
            "kube-5d12f6fda1964bf0-ca",
            "kube-5d12f6fda1964bf0-etcd",
            "kube-5d12f6fda1964bf0-proxy",
            "kube-5d12f6fda1964bf0-sa"
        ]
    );
    assert!(
        !format!("{pair:?}").contains("MIIE"),
        "keys never reach logs"
    );
}

#[test]
fn credentials_stay_one_value_whatever_characters_they_hold() {
    use base64::Engine;
    let template = template();
    let cluster = cluster(&template);
    let mut settings = settings();
    settings.cloud.region_name = Some("Region\"One".to_owned());
    settings.cloud.ca_bundle = Some("-----BEGIN CERTIFICATE-----\n".to_owned());
    // A secret that tries to end the scalar and add keys of its own.
    let credential = ApplicationCredential {
        id: "a1b2".to_owned(),
        secret: "x\"\n      auth_url: https://evil.test\n#".to_owned(),
    };
    let objects = render::render_cloud_credentials(&settings, &cluster, &credential);
    assert_eq!(objects.len(), 3);
    let clouds = base64::engine::general_purpose::STANDARD
        .decode(objects[0]["data"]["clouds.yaml"].as_str().unwrap())
        .unwrap();
    let parsed: Value = serde_saphyr::from_slice(&clouds).unwrap();
    let cloud = &parsed["clouds"]["openstack"];
    assert_eq!(
        cloud["auth"]["application_credential_secret"],
        credential.secret
    );
    assert_eq!(
        cloud["auth"]["auth_url"],
        "https://keystone.cloud.test:5000/v3"
    );
    assert_eq!(cloud["region_name"], "Region\"One");
    assert_eq!(cloud["auth_type"], "v3applicationcredential");
    assert!(objects[0]["data"]["cacert"].is_string());
    assert!(!format!("{credential:?}").contains("evil"));

    let conf = render::cloud_conf(&settings, &credential);
    let secret_line = conf
        .lines()
        .find(|line| line.starts_with("application-credential-secret="))
        .unwrap();
    assert_eq!(
        secret_line,
        "application-credential-secret=\"x\\\"\\n      auth_url: https://evil.test\\n#\""
    );
    assert!(
        !conf
            .lines()
            .any(|line| line.trim_start().starts_with("auth_url: https://evil")),
        "the secret's newline stays inside its quotes: {conf}"
    );
    let resource_set = &objects[2];
    assert_eq!(resource_set["kind"], "ClusterResourceSet");
    assert_eq!(
        resource_set["spec"]["clusterSelector"]["matchLabels"]["magnum.openstack.org/cluster-uuid"],
        cluster.uuid.to_string()
    );
}

#[test]
fn the_class_refers_to_templates_that_exist() {
    let objects = class::class_objects(&settings());
    let class_object = objects.last().unwrap();
    assert_eq!(class_object["kind"], "ClusterClass");
    let mut references = Vec::new();
    let spec = &class_object["spec"];
    references.push(&spec["infrastructure"]["templateRef"]);
    references.push(&spec["controlPlane"]["templateRef"]);
    references.push(&spec["controlPlane"]["machineInfrastructure"]["templateRef"]);
    let worker = &spec["workers"]["machineDeployments"][0];
    references.push(&worker["bootstrap"]["templateRef"]);
    references.push(&worker["infrastructure"]["templateRef"]);
    for reference in references {
        let found = objects.iter().any(|object| {
            object["kind"] == reference["kind"]
                && object["apiVersion"] == reference["apiVersion"]
                && object["metadata"]["name"] == reference["name"]
        });
        assert!(found, "{reference}");
    }
    // Every variable a patch reads is declared.
    let declared: Vec<&str> = spec["variables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|variable| variable["name"].as_str().unwrap())
        .collect();
    for patch in spec["patches"].as_array().unwrap() {
        for definition in patch["definitions"].as_array().unwrap() {
            for json_patch in definition["jsonPatches"].as_array().unwrap() {
                if let Some(variable) = json_patch["valueFrom"]["variable"].as_str() {
                    assert!(declared.contains(&variable), "{variable}");
                }
            }
        }
    }
}

#[test]
fn fields_capo_will_not_change_keep_their_live_values() {
    let template = template();
    let cluster = cluster(&template);
    let nodegroups = default_nodegroups(&cluster);
    let mut resolved = resolved();
    // The new template names another external network and a fixed network.
    resolved.external_network_id = Some("ffffffff-0000-4000-8000-000000000000".to_owned());
    resolved.fixed_network_id = Some(FIXED_NETWORK.to_owned());
    let mut rendered = render::render_cluster(
        &settings(),
        ClusterInput {
            cluster: &cluster,
            template: &template,
            nodegroups: &nodegroups,
            resolved: &resolved,
            rollout_after: None,
        },
    )
    .unwrap();
    let live = json!({"spec": {
        "externalNetwork": {"id": EXTERNAL_NETWORK},
        "managedSubnets": [{"cidr": "10.0.0.0/24", "dnsNameservers": ["8.8.8.8"]}],
        "apiServerLoadBalancer": {"enabled": true},
        "disableAPIServerFloatingIP": false,
    }});
    let kept = render::keep_immutable(&mut rendered, &live);
    assert_eq!(kept, ["externalNetwork", "network", "managedSubnets"]);
    let variables = variables(&rendered);
    assert_eq!(
        variables["externalNetwork"],
        json!({"id": EXTERNAL_NETWORK})
    );
    assert_eq!(variables["network"], json!({"id": ""}));
    assert_eq!(
        variables["managedSubnets"],
        json!([{"cidr": "10.0.0.0/24", "dnsNameservers": ["8.8.8.8"]}])
    );
    // Rendering what already runs changes nothing.
    let again = render::keep_immutable(&mut rendered, &live);
    assert!(again.is_empty(), "{again:?}");
    // Mutable settings still follow the template.
    assert_eq!(variables["flavor"], "m1.medium");
}

#[test]
fn review_rules_even_masters_subnets_floating_ips_ports_classes_and_versions() {
    let template = template();
    let cluster = cluster(&template);
    let resolved = resolved();
    let render_with = |cluster: &magnum_domain::cluster::Cluster,
                       template: &magnum_domain::cluster_template::ClusterTemplate,
                       nodegroups: &[magnum_domain::cluster::NodeGroup],
                       resolved: &render::Resolved| {
        render::render_cluster(
            &settings(),
            ClusterInput {
                cluster,
                template,
                nodegroups,
                resolved,
                rollout_after: None,
            },
        )
    };
    // An even control plane is refused with upstream's words.
    let mut even = default_nodegroups(&cluster);
    even[0].node_count = 2;
    let error = render_with(&cluster, &template, &even, &resolved).unwrap_err();
    assert_eq!(
        error.to_string(),
        "master nodegroup size of 2 is invalid, size cannot be an even number."
    );
    // A named subnet alone: no network is made for the cluster.
    let mut subnet_only = resolved.clone();
    subnet_only.fixed_subnet_id = Some(FIXED_SUBNET.to_owned());
    let nodegroups = default_nodegroups(&cluster);
    let rendered = render_with(&cluster, &template, &nodegroups, &subnet_only).unwrap();
    assert_eq!(variables(&rendered)["managedSubnets"], json!([]));
    assert_eq!(
        variables(&rendered)["subnets"],
        json!([{"id": FIXED_SUBNET}])
    );
    // Private nodes keep a reachable API unless master_lb_floating_ip_enabled says no.
    let mut private = cluster.clone();
    private.floating_ip_enabled = false;
    let rendered = render_with(&private, &template, &nodegroups, &resolved).unwrap();
    assert_eq!(variables(&rendered)["disableAPIServerFloatingIP"], true);
    private
        .labels
        .insert("master_lb_floating_ip_enabled", "true");
    let rendered = render_with(&private, &template, &nodegroups, &resolved).unwrap();
    assert_eq!(variables(&rendered)["disableAPIServerFloatingIP"], false);
    // The API port reaches the load balancer too.
    let mut ported = template.clone();
    ported.apiserver_port = Some(8443);
    let rendered = render_with(&cluster, &ported, &nodegroups, &resolved).unwrap();
    assert_eq!(variables(&rendered)["apiServerPort"], 8443);
    assert_eq!(rendered["spec"]["clusterNetwork"]["apiServerPort"], 8443);
    // A running cluster keeps its class and never goes back in version.
    let mut rendered = render_with(&cluster, &template, &nodegroups, &resolved).unwrap();
    let live =
        json!({"spec": {"topology": {"classRef": {"name": "magnum-rs-v0"}, "version": "v1.34.1"}}});
    render::keep_class(&mut rendered, &live);
    render::keep_newer_version(&mut rendered, &live);
    assert_eq!(
        rendered["spec"]["topology"]["classRef"]["name"],
        "magnum-rs-v0"
    );
    assert_eq!(
        rendered["metadata"]["labels"]["magnum-rs.openstack.org/class"],
        "magnum-rs-v0"
    );
    assert_eq!(rendered["spec"]["topology"]["version"], "v1.34.1");
    let older = json!({"spec": {"topology": {"version": "v1.32.9"}}});
    let mut rendered = render_with(&cluster, &template, &nodegroups, &resolved).unwrap();
    render::keep_newer_version(&mut rendered, &older);
    assert_eq!(
        rendered["spec"]["topology"]["version"], "v1.33.5",
        "upgrades still go up"
    );
    // The cloud provider reads its endpoint type under gcfg's own key.
    let conf = render::cloud_conf(
        &settings(),
        &ApplicationCredential {
            id: "a".to_owned(),
            secret: "b".to_owned(),
        },
    );
    assert!(conf.contains("\nos-endpoint-type=\"public\"\n"), "{conf}");
}
