//! Every object the driver can render, over the whole matrix of template and cluster options,
//! passes the real CRD schemas (CAPI v1.13.5, CAPO v0.14.7, CAAPH v0.6.4) and the class's own
//! variable schemas: what kube-apiserver with `fieldValidation=Strict` and CAPI's topology
//! webhook would accept.

mod fixtures;

use std::path::PathBuf;

use fixtures::*;
use magnum_domain::cluster::ClusterStatus;
use magnum_driver_capi::class;
use magnum_driver_capi::names::CaPurpose;
use magnum_driver_capi::render::{self, ApplicationCredential, ClusterInput, KeyPair};
use magnum_driver_capi::schema::{ClassVariables, CrdSchemas};
use serde_json::Value;

fn crds() -> Vec<CrdSchemas> {
    let directory = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("crds");
    let mut crds = Vec::new();
    for entry in std::fs::read_dir(&directory).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let document: Value = serde_saphyr::from_str(&text).unwrap();
        crds.push(CrdSchemas::from_crd(&document).unwrap());
    }
    assert_eq!(crds.len(), 16);
    crds
}

/// Checks `object` against its CRD; core objects (secrets) against the few rules that matter.
fn check(crds: &[CrdSchemas], object: &Value, case: &str) -> usize {
    let kind = object["kind"].as_str().unwrap();
    let api_version = object["apiVersion"].as_str().unwrap();
    if api_version == "v1" {
        assert_eq!(kind, "Secret", "{case}");
        let name = object["metadata"]["name"].as_str().unwrap();
        assert!(name.len() <= 253 && !name.is_empty(), "{case}: {name}");
        assert!(object["data"].is_object(), "{case}");
        return 0;
    }
    let group = api_version.split('/').next().unwrap();
    let crd = crds
        .iter()
        .find(|crd| crd.group() == group && crd.kind() == kind)
        .unwrap_or_else(|| panic!("{case}: no CRD for {api_version} {kind}"));
    let report = crd.check_object(object);
    assert!(
        report.is_valid(),
        "{case}: {kind} {} is invalid:\n{}\n{}",
        object["metadata"]["name"],
        report
            .violations
            .iter()
            .map(|violation| violation.to_string())
            .collect::<Vec<_>>()
            .join("\n"),
        serde_json::to_string_pretty(object).unwrap()
    );
    report.unevaluated_total
}

#[test]
fn the_class_and_its_templates_pass_their_crds() {
    let crds = crds();
    for object in class::class_objects(&settings()) {
        check(&crds, &object, "class");
    }
    let mut mirrored = settings();
    mirrored.addons.image_registry = Some("registry.cloud.test/mirror/".to_owned());
    for settings in [settings(), mirrored] {
        let proxies = magnum_driver_capi::addons::chart_proxies(&settings);
        assert_eq!(proxies.len(), 5);
        for proxy in &proxies {
            check(&crds, proxy, "addons");
            // The values are YAML once CAAPH has filled the template in.
            let values = proxy["spec"]["valuesTemplate"].as_str().unwrap();
            let filled = values
                .replace(
                    "{{ index .Cluster.spec.clusterNetwork.pods.cidrBlocks 0 }}",
                    "10.100.0.0/16",
                )
                .replace(
                    "{{ .Cluster.spec.controlPlaneEndpoint.host }}",
                    "203.0.113.10",
                )
                .replace("{{ .Cluster.spec.controlPlaneEndpoint.port }}", "6443")
                .replace("{{ .Cluster.metadata.name }}", "kube-x");
            assert!(!filled.contains("{{"), "{filled}");
            let parsed: Value = serde_saphyr::from_str(&filled)
                .unwrap_or_else(|error| panic!("{}: {error}\n{filled}", proxy["metadata"]["name"]));
            assert!(parsed.is_object(), "{filled}");
            if settings.addons.image_registry.is_some() {
                assert!(filled.contains("registry.cloud.test/mirror"), "{filled}");
            }
        }
    }
    let class_object = class::cluster_class(&settings());
    let variables = ClassVariables::from_cluster_class(&class_object).unwrap();
    assert_eq!(variables.names().count(), class::variable_schemas().len());
}

/// One option of the matrix: a name and what it changes.
type Tweak = (&'static str, fn(&mut Case));

struct Case {
    template: magnum_domain::cluster_template::ClusterTemplate,
    cluster: magnum_domain::cluster::Cluster,
    nodegroups: Vec<magnum_domain::cluster::NodeGroup>,
    resolved: render::Resolved,
    rollout_after: Option<&'static str>,
}

fn base() -> Case {
    let template = template();
    let cluster = cluster(&template);
    let nodegroups = default_nodegroups(&cluster);
    Case {
        template,
        cluster,
        nodegroups,
        resolved: resolved(),
        rollout_after: None,
    }
}

const NETWORKS: [Tweak; 3] = [
    ("managed network", |_| {}),
    ("fixed network and subnet", |case| {
        case.resolved.fixed_network_id = Some(FIXED_NETWORK.to_owned());
        case.resolved.fixed_subnet_id = Some(FIXED_SUBNET.to_owned());
    }),
    ("no external network, no floating ip", |case| {
        case.resolved.external_network_id = None;
        case.cluster.floating_ip_enabled = false;
        case.cluster.master_lb_enabled = false;
    }),
];

const CNIS: [Tweak; 3] = [
    ("calico", |_| {}),
    ("cilium", |case| {
        case.template.network_driver = Some("cilium".to_owned());
        case.cluster
            .labels
            .insert("cilium_ipv4pool", "10.200.0.0/16");
    }),
    ("flannel without cinder", |case| {
        case.template.network_driver = Some("flannel".to_owned());
        case.template.volume_driver = None;
    }),
];

const SCALING: [Tweak; 3] = [
    ("fixed counts", |_| {}),
    ("autoscaled", |case| {
        case.cluster.labels.insert("auto_scaling_enabled", "true");
        case.nodegroups[1].min_node_count = 1;
        case.nodegroups[1].max_node_count = Some(10);
    }),
    ("no healing, one master, no workers", |case| {
        case.cluster.labels.insert("auto_healing_enabled", "false");
        case.nodegroups[0].node_count = 1;
        case.nodegroups[1].node_count = 0;
    }),
];

const EXTRAS: [Tweak; 5] = [
    ("plain", |_| {}),
    ("boot volumes, zones, flatcar, rollout", |case| {
        case.cluster.labels.insert("boot_volume_size", "50");
        case.cluster.labels.insert("boot_volume_type", "ssd");
        case.cluster.labels.insert("availability_zone", "az-1");
        case.cluster
            .labels
            .insert("control_plane_availability_zones", "az-1,az-2,az-3");
        case.resolved.os_distro = "flatcar".to_owned();
        case.rollout_after = Some("2026-11-26T07:00:00Z");
    }),
    ("many nodegroups, one leaving", |case| {
        for index in 0..20u8 {
            let mut group = nodegroup(
                &case.cluster,
                &format!("Group {index}"),
                "worker",
                3,
                10 + index,
            );
            group.flavor_id = Some("5c3a".to_owned());
            group.image_id = Some("ubuntu-2404-kube-v1.34".to_owned());
            group.labels.insert("boot_volume_size", "20");
            if index == 7 {
                group.status = ClusterStatus::DeleteInProgress;
            }
            case.nodegroups.push(group);
        }
    }),
    ("custom networks and domain, api port, no keypair", |case| {
        case.cluster
            .labels
            .insert("calico_ipv4pool", "192.168.0.0/16");
        case.cluster
            .labels
            .insert("service_cluster_ip_range", "10.96.0.0/12");
        case.cluster
            .labels
            .insert("dns_cluster_domain", "k8s.example.internal");
        case.cluster
            .labels
            .insert("fixed_subnet_cidr", "10.42.0.0/24");
        case.template.apiserver_port = Some(443);
        case.template.dns_nameserver = Some("1.1.1.1, 9.9.9.9".to_owned());
        case.cluster.keypair = None;
        case.template.keypair_id = None;
    }),
    ("ipv6 pods, kube_tag without v", |case| {
        case.cluster
            .labels
            .insert("calico_ipv4pool", "fd00:10::/56");
        case.cluster.labels.insert("kube_tag", "1.34.1");
    }),
];

#[test]
fn every_combination_of_options_renders_objects_the_crds_and_the_class_accept() {
    let crds = crds();
    let class_object = class::cluster_class(&settings());
    let variables = ClassVariables::from_cluster_class(&class_object).unwrap();
    let pair = KeyPair {
        cert_pem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".to_owned(),
        key_pem: "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n".to_owned(),
    };
    let credential = ApplicationCredential {
        id: "0123abcd".to_owned(),
        secret: "s3cret".to_owned(),
    };
    let mut cases = 0;
    let mut objects_checked = 0;
    for network in NETWORKS {
        for cni in CNIS {
            for scaling in SCALING {
                for extra in EXTRAS {
                    let mut case = base();
                    let name = format!("{} / {} / {} / {}", network.0, cni.0, scaling.0, extra.0);
                    for tweak in [network.1, cni.1, scaling.1, extra.1] {
                        tweak(&mut case);
                    }
                    let cluster = render::render_cluster(
                        &settings(),
                        ClusterInput {
                            cluster: &case.cluster,
                            template: &case.template,
                            nodegroups: &case.nodegroups,
                            resolved: &case.resolved,
                            rollout_after: case.rollout_after,
                        },
                    )
                    .unwrap_or_else(|error| panic!("{name}: {error}"));
                    check(&crds, &cluster, &name);
                    let report = variables.check_cluster(&cluster);
                    assert!(
                        report.is_valid(),
                        "{name}: class variables:\n{}",
                        report
                            .violations
                            .iter()
                            .map(|violation| violation.to_string())
                            .collect::<Vec<_>>()
                            .join("\n")
                    );
                    let mut others =
                        render::render_cloud_credentials(&settings(), &case.cluster, &credential);
                    for purpose in CaPurpose::ALL {
                        others.push(render::render_ca_secret(
                            &settings(),
                            &case.cluster,
                            purpose,
                            &pair,
                        ));
                    }
                    for object in &others {
                        check(&crds, object, &name);
                    }
                    objects_checked += 1 + others.len();
                    cases += 1;
                }
            }
        }
    }
    assert_eq!(cases, 3 * 3 * 3 * 5);
    println!("{cases} combinations, {objects_checked} objects checked");
}

#[test]
fn a_variable_value_the_class_does_not_allow_is_caught_before_applying() {
    let class_object = class::cluster_class(&settings());
    let variables = ClassVariables::from_cluster_class(&class_object).unwrap();
    let case = base();
    let mut cluster = render::render_cluster(
        &settings(),
        ClusterInput {
            cluster: &case.cluster,
            template: &case.template,
            nodegroups: &case.nodegroups,
            resolved: &case.resolved,
            rollout_after: None,
        },
    )
    .unwrap();
    // An image id that is not a uuid: CAPO's webhook would refuse the generated template.
    for variable in cluster["spec"]["topology"]["variables"]
        .as_array_mut()
        .unwrap()
    {
        if variable["name"] == "imageUUID" {
            variable["value"] = serde_json::json!("ubuntu-latest");
        }
    }
    let index = cluster["spec"]["topology"]["variables"]
        .as_array()
        .unwrap()
        .iter()
        .position(|variable| variable["name"] == "imageUUID")
        .unwrap();
    let report = variables.check_cluster(&cluster);
    // Too short for a uuid, and not one.
    assert_eq!(report.violations.len(), 2, "{:?}", report.violations);
    for violation in &report.violations {
        let message = violation.to_string();
        assert!(
            message.starts_with(&format!(
                "spec.topology.variables[{index}].value: Invalid value: \"ubuntu-latest\""
            )),
            "{message}"
        );
    }
    assert!(report.violations[1]
        .to_string()
        .ends_with("must be of type uuid: \"ubuntu-latest\""));
}
