//! Golden manifests: everything the driver writes for representative templates and clusters,
//! compared byte for byte with the files under `tests/golden/`. A change of rendering shows as
//! a diff of those files; they are re-blessed only explicitly, with
//! `MAGNUM_BLESS_GOLDEN=1 cargo test -p magnum-driver-capi --test capi_golden`.

mod fixtures;

use std::path::PathBuf;

use fixtures::*;
use magnum_domain::cluster::{Cluster, NodeGroup};
use magnum_domain::cluster_template::ClusterTemplate;
use magnum_driver_capi::names::CaPurpose;
use magnum_driver_capi::render::{self, ApplicationCredential, ClusterInput, KeyPair};
use magnum_driver_capi::{addons, class};
use serde_json::{json, Value};

struct Case {
    name: &'static str,
    template: ClusterTemplate,
    cluster: Cluster,
    nodegroups: Vec<NodeGroup>,
    rollout_after: Option<&'static str>,
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();

    // The defaults: three masters, two workers, calico, cinder, a load balancer.
    let defaults = fixtures::template();
    let record = cluster(&defaults);
    let nodegroups = default_nodegroups(&record);
    cases.push(Case {
        name: "default",
        template: defaults,
        cluster: record,
        nodegroups,
        rollout_after: None,
    });

    // Autoscaled workers across zones on boot volumes, cilium, a GPU nodegroup, no healing.
    let mut template = fixtures::template();
    template.network_driver = Some("cilium".to_owned());
    template.labels = labels(&[
        ("kube_tag", "v1.34.1"),
        ("auto_scaling_enabled", "true"),
        ("auto_healing_enabled", "false"),
        ("min_node_count", "1"),
        ("max_node_count", "6"),
        ("availability_zone", "az1"),
        ("boot_volume_size", "40"),
        ("boot_volume_type", "ssd"),
    ]);
    let mut cluster = fixtures::cluster(&template);
    cluster.master_count = 1;
    let mut nodegroups = vec![
        nodegroup(&cluster, "default-master", "master", 1, 1),
        nodegroup(&cluster, "default-worker", "worker", 2, 2),
        nodegroup(&cluster, "gpu", "worker", 1, 3),
    ];
    nodegroups[1].min_node_count = 1;
    nodegroups[2].flavor_id = Some("5c3a".to_owned());
    nodegroups[2].max_node_count = Some(3);
    cases.push(Case {
        name: "autoscaled-zones-cilium",
        template,
        cluster,
        nodegroups,
        rollout_after: None,
    });

    // Flannel on an existing network, no API load balancer, no floating IPs, in a CA rotation.
    let mut template = fixtures::template();
    template.network_driver = Some("flannel".to_owned());
    template.volume_driver = None;
    let mut cluster = fixtures::cluster(&template);
    cluster.master_lb_enabled = false;
    cluster.floating_ip_enabled = false;
    cluster.fixed_network = Some(FIXED_NETWORK.to_owned());
    cluster.fixed_subnet = Some(FIXED_SUBNET.to_owned());
    let nodegroups = default_nodegroups(&cluster);
    cases.push(Case {
        name: "flannel-existing-network-rotating",
        template,
        cluster,
        nodegroups,
        rollout_after: Some("2026-11-26T10:00:01Z"),
    });
    cases
}

/// Every object the driver applies for a case, in the order it applies them.
fn manifests(case: &Case) -> Value {
    let settings = settings();
    let mut resolved = resolved();
    if case.cluster.fixed_network.is_some() {
        resolved.fixed_network_id = Some(FIXED_NETWORK.to_owned());
        resolved.fixed_subnet_id = Some(FIXED_SUBNET.to_owned());
    }
    let pair = KeyPair {
        cert_pem: "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n".to_owned(),
        key_pem: "-----BEGIN PRIVATE KEY-----\nKEY\n-----END PRIVATE KEY-----\n".to_owned(),
    };
    let credential = ApplicationCredential {
        id: "app-credential-id".to_owned(),
        secret: "app-credential-secret".to_owned(),
    };
    let mut objects: Vec<Value> = class::class_objects(&settings);
    objects.extend(addons::chart_proxies(&settings));
    for purpose in CaPurpose::ALL {
        objects.push(render::render_ca_secret(
            &settings,
            &case.cluster,
            purpose,
            &pair,
        ));
    }
    objects.extend(render::render_cloud_credentials(
        &settings,
        &case.cluster,
        &credential,
    ));
    objects.push(
        render::render_cluster(
            &settings,
            ClusterInput {
                cluster: &case.cluster,
                template: &case.template,
                nodegroups: &case.nodegroups,
                resolved: &resolved,
                rollout_after: case.rollout_after,
            },
        )
        .unwrap(),
    );
    json!(objects)
}

fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.json"))
}

#[test]
fn rendered_manifests_match_the_golden_files() {
    let bless = std::env::var("MAGNUM_BLESS_GOLDEN").is_ok_and(|value| value == "1");
    let mut differing = Vec::new();
    for case in cases() {
        let rendered = serde_json::to_string_pretty(&manifests(&case)).unwrap() + "\n";
        let path = golden_path(case.name);
        if bless {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &rendered).unwrap();
            continue;
        }
        let golden = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        if golden != rendered {
            let line = golden
                .lines()
                .zip(rendered.lines())
                .position(|(a, b)| a != b)
                .unwrap_or_else(|| golden.lines().count().min(rendered.lines().count()));
            differing.push(format!(
                "{} differs from line {}: golden {:?}, rendered {:?}",
                path.display(),
                line + 1,
                golden.lines().nth(line),
                rendered.lines().nth(line)
            ));
        }
    }
    assert!(
        differing.is_empty(),
        "{}\n(re-bless with MAGNUM_BLESS_GOLDEN=1 only when the change is intended)",
        differing.join("\n")
    );
}
