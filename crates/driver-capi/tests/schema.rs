//! The structural-schema validator against the real upstream CRDs in `crds/`, and against the
//! variable schemas a ClusterClass declares.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use magnum_driver_capi::schema::{
    ClassVariables, CrdSchemas, Report, Schema, UnevaluatedCheck, Violation, ViolationKind,
    MAX_VIOLATIONS,
};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// Loading the CRDs.

fn crds_directory() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("crds")
}

/// Every CRD file, parsed once: (file name, CRD).
fn crds() -> &'static [(String, CrdSchemas)] {
    static CRDS: OnceLock<Vec<(String, CrdSchemas)>> = OnceLock::new();
    CRDS.get_or_init(|| {
        let mut files: Vec<PathBuf> = std::fs::read_dir(crds_directory())
            .expect("crds directory")
            .map(|entry| entry.expect("directory entry").path())
            .filter(|path| {
                path.extension()
                    .is_some_and(|extension| extension == "yaml")
            })
            .collect();
        files.sort();
        files
            .into_iter()
            .map(|path| {
                let text = std::fs::read_to_string(&path).expect("readable CRD file");
                let document: Value = serde_saphyr::from_str(&text)
                    .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
                let crd = CrdSchemas::from_crd(&document)
                    .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
                let name = path.file_name().expect("file name").to_string_lossy();
                (name.into_owned(), crd)
            })
            .collect()
    })
}

fn crd(group: &str, kind: &str) -> &'static CrdSchemas {
    crds()
        .iter()
        .map(|(_, crd)| crd)
        .find(|crd| crd.group() == group && crd.kind() == kind)
        .unwrap_or_else(|| panic!("no CRD for {kind}.{group}"))
}

/// Validates an object against the CRD its `apiVersion` and `kind` name.
fn check(object: &Value) -> Report {
    let group = object["apiVersion"]
        .as_str()
        .and_then(|api_version| api_version.split_once('/'))
        .map(|(group, _)| group)
        .expect("apiVersion group/version");
    let kind = object["kind"].as_str().expect("kind");
    crd(group, kind).check_object(object)
}

fn messages(violations: &[Violation]) -> Vec<String> {
    violations
        .iter()
        .map(|violation| violation.message.clone())
        .collect()
}

#[track_caller]
fn assert_valid(object: &Value) {
    let report = check(object);
    assert!(
        report.is_valid(),
        "{} {} should be valid: {:#?}",
        object["kind"],
        object["metadata"]["name"],
        messages(&report.violations)
    );
}

/// Asserts the object has exactly these violations (message lines, in order).
#[track_caller]
fn assert_violations(object: &Value, expected: &[&str]) -> Vec<Violation> {
    let violations = check(object).violations;
    assert_eq!(messages(&violations), expected);
    violations
}

/// A deeply nested value, dropped without recursing (serde_json's drop recurses), also when
/// a failed assertion unwinds.
struct Deep(Value);

impl Drop for Deep {
    fn drop(&mut self) {
        let mut pending = vec![self.0.take()];
        while let Some(value) = pending.pop() {
            match value {
                Value::Array(items) => pending.extend(items),
                Value::Object(fields) => pending.extend(fields.into_iter().map(|(_, child)| child)),
                _ => {}
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Objects the driver will write, minimal and valid.

fn cluster() -> Value {
    json!({
        "apiVersion": "cluster.x-k8s.io/v1beta2",
        "kind": "Cluster",
        "metadata": {
            "name": "k8s-a1b2c3",
            "namespace": "magnum-system",
            "labels": {"magnum.openstack.org/cluster-uuid": "0b5a3c52-6a31-4f4e-9d8e-33c1c8f7e8a1"},
        },
        "spec": {
            "clusterNetwork": {
                "pods": {"cidrBlocks": ["10.100.0.0/16"]},
                "services": {"cidrBlocks": ["10.254.0.0/16"]},
                "serviceDomain": "cluster.local",
            },
            "topology": {
                "classRef": {"name": "magnum-v1"},
                "version": "v1.33.1",
                "controlPlane": {"replicas": 3},
                "workers": {
                    "machineDeployments": [
                        {"class": "default-worker", "name": "md-0", "replicas": 2},
                    ],
                },
                "variables": [
                    {"name": "imageRepository", "value": "registry.k8s.io"},
                    {"name": "workerFlavor", "value": "m1.large"},
                    {"name": "etcd", "value": {"diskSizeGiB": 20}},
                    {"name": "dnsNameservers", "value": ["8.8.8.8", "1.1.1.1"]},
                ],
            },
        },
    })
}

fn cluster_class() -> Value {
    let template_ref = |api_version: &str, kind: &str, name: &str| json!({"templateRef": {"apiVersion": api_version, "kind": kind, "name": name}});
    let mut control_plane = template_ref(
        "controlplane.cluster.x-k8s.io/v1beta2",
        "KubeadmControlPlaneTemplate",
        "magnum-v1-control-plane",
    );
    control_plane["machineInfrastructure"] = template_ref(
        "infrastructure.cluster.x-k8s.io/v1beta1",
        "OpenStackMachineTemplate",
        "magnum-v1-control-plane",
    );
    json!({
        "apiVersion": "cluster.x-k8s.io/v1beta2",
        "kind": "ClusterClass",
        "metadata": {"name": "magnum-v1", "namespace": "magnum-system"},
        "spec": {
            "controlPlane": control_plane,
            "infrastructure": template_ref(
                "infrastructure.cluster.x-k8s.io/v1beta1",
                "OpenStackClusterTemplate",
                "magnum-v1",
            ),
            "workers": {
                "machineDeployments": [{
                    "class": "default-worker",
                    "bootstrap": template_ref(
                        "bootstrap.cluster.x-k8s.io/v1beta2",
                        "KubeadmConfigTemplate",
                        "magnum-v1-worker",
                    ),
                    "infrastructure": template_ref(
                        "infrastructure.cluster.x-k8s.io/v1beta1",
                        "OpenStackMachineTemplate",
                        "magnum-v1-worker",
                    ),
                }],
            },
            "variables": [
                {"name": "imageRepository", "required": false, "schema": {"openAPIV3Schema": {
                    "type": "string", "minLength": 1, "default": "registry.k8s.io",
                }}},
                {"name": "workerFlavor", "required": true, "schema": {"openAPIV3Schema": {
                    "type": "string", "minLength": 1, "maxLength": 255,
                }}},
                {"name": "etcd", "required": false, "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "diskSizeGiB": {"type": "integer", "minimum": 1, "format": "int32"},
                        "volumeType": {"type": "string"},
                    },
                }}},
                {"name": "dnsNameservers", "required": false, "schema": {"openAPIV3Schema": {
                    "type": "array", "maxItems": 3,
                    "items": {"type": "string", "format": "ipv4"},
                }}},
                {"name": "extraValues", "required": false, "schema": {"openAPIV3Schema": {
                    "type": "object", "x-kubernetes-preserve-unknown-fields": true,
                }}},
            ],
            "patches": [{
                "name": "image-repository",
                "definitions": [{
                    "selector": {
                        "apiVersion": "controlplane.cluster.x-k8s.io/v1beta2",
                        "kind": "KubeadmControlPlaneTemplate",
                        "matchResources": {"controlPlane": true},
                    },
                    "jsonPatches": [{
                        "op": "add",
                        "path": "/spec/template/spec/kubeadmConfigSpec/clusterConfiguration/imageRepository",
                        "valueFrom": {"variable": "imageRepository"},
                    }],
                }],
            }],
        },
    })
}

fn openstack_cluster_template() -> Value {
    json!({
        "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1",
        "kind": "OpenStackClusterTemplate",
        "metadata": {"name": "magnum-v1", "namespace": "magnum-system"},
        "spec": {"template": {"spec": {
            "identityRef": {"cloudName": "openstack", "name": "k8s-a1b2c3-cloud-config", "type": "Secret"},
            "externalNetwork": {"id": "6f1b2c1e-3f7a-4b7e-9b8e-2d3c4a5b6c7d"},
            "managedSubnets": [{"cidr": "10.0.0.0/24", "dnsNameservers": ["8.8.8.8"]}],
            "apiServerLoadBalancer": {"enabled": true},
            "managedSecurityGroups": {"allowAllInClusterTraffic": true},
            "tags": ["magnum", "k8s-a1b2c3"],
        }}},
    })
}

fn openstack_machine_template() -> Value {
    json!({
        "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1",
        "kind": "OpenStackMachineTemplate",
        "metadata": {"name": "magnum-v1-worker", "namespace": "magnum-system"},
        "spec": {"template": {"spec": {
            "flavor": "m1.large",
            "image": {"filter": {"name": "ubuntu-2404-kube-v1.33.1"}},
            "sshKeyName": "default",
            "rootVolume": {"sizeGiB": 40},
        }}},
    })
}

fn kubeadm_control_plane_template() -> Value {
    json!({
        "apiVersion": "controlplane.cluster.x-k8s.io/v1beta2",
        "kind": "KubeadmControlPlaneTemplate",
        "metadata": {"name": "magnum-v1-control-plane", "namespace": "magnum-system"},
        "spec": {"template": {"spec": {"kubeadmConfigSpec": {
            "clusterConfiguration": {
                "apiServer": {"extraArgs": [{"name": "cloud-provider", "value": "external"}]},
                "controllerManager": {"extraArgs": [{"name": "cloud-provider", "value": "external"}]},
            },
            "initConfiguration": {"nodeRegistration": {
                "name": "{{ local_hostname }}",
                "kubeletExtraArgs": [{"name": "cloud-provider", "value": "external"}],
            }},
            "joinConfiguration": {"nodeRegistration": {
                "name": "{{ local_hostname }}",
                "kubeletExtraArgs": [{"name": "cloud-provider", "value": "external"}],
            }},
            "files": [{
                "path": "/etc/kubernetes/cloud.conf",
                "owner": "root:root",
                "permissions": "0600",
                "contentFrom": {"secret": {"name": "k8s-a1b2c3-cloud-config", "key": "cloud.conf"}},
            }],
        }}}},
    })
}

fn kubeadm_config_template() -> Value {
    json!({
        "apiVersion": "bootstrap.cluster.x-k8s.io/v1beta2",
        "kind": "KubeadmConfigTemplate",
        "metadata": {"name": "magnum-v1-worker", "namespace": "magnum-system"},
        "spec": {"template": {"spec": {
            "joinConfiguration": {"nodeRegistration": {
                "name": "{{ local_hostname }}",
                "kubeletExtraArgs": [{"name": "cloud-provider", "value": "external"}],
            }},
        }}},
    })
}

fn helm_chart_proxy() -> Value {
    json!({
        "apiVersion": "addons.cluster.x-k8s.io/v1alpha1",
        "kind": "HelmChartProxy",
        "metadata": {"name": "openstack-cloud-controller-manager", "namespace": "magnum-system"},
        "spec": {
            "clusterSelector": {"matchLabels": {"magnum.openstack.org/driver": "capi"}},
            "repoURL": "https://kubernetes.github.io/cloud-provider-openstack",
            "chartName": "openstack-cloud-controller-manager",
            "version": "2.33.0",
            "namespace": "kube-system",
            "releaseName": "occm",
            "valuesTemplate": "cloudConfig:\n  global:\n    auth-url: {{ .Cluster.metadata.annotations.authURL }}\n",
            "options": {"wait": true, "timeout": "10m0s"},
        },
    })
}

fn machine_health_check() -> Value {
    json!({
        "apiVersion": "cluster.x-k8s.io/v1beta2",
        "kind": "MachineHealthCheck",
        "metadata": {"name": "k8s-a1b2c3-md-0", "namespace": "magnum-system"},
        "spec": {
            "clusterName": "k8s-a1b2c3",
            "selector": {"matchLabels": {"cluster.x-k8s.io/deployment-name": "k8s-a1b2c3-md-0"}},
            "checks": {
                "nodeStartupTimeoutSeconds": 600,
                "unhealthyNodeConditions": [
                    {"type": "Ready", "status": "Unknown", "timeoutSeconds": 300},
                    {"type": "Ready", "status": "False", "timeoutSeconds": 300},
                ],
            },
            "remediation": {"triggerIf": {"unhealthyLessThanOrEqualTo": "40%"}},
        },
    })
}

fn cluster_resource_set() -> Value {
    json!({
        "apiVersion": "addons.cluster.x-k8s.io/v1beta2",
        "kind": "ClusterResourceSet",
        "metadata": {"name": "k8s-a1b2c3-crs", "namespace": "magnum-system"},
        "spec": {
            "clusterSelector": {"matchLabels": {"magnum.openstack.org/cluster": "k8s-a1b2c3"}},
            "resources": [{"kind": "Secret", "name": "k8s-a1b2c3-addons"}],
            "strategy": "Reconcile",
        },
    })
}

// ---------------------------------------------------------------------------------------------
// The CRD files.

#[test]
fn every_crd_file_parses_with_every_served_version() {
    let crds = crds();
    assert_eq!(
        crds.len(),
        16,
        "CRD files in {}",
        crds_directory().display()
    );

    let mut served: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    let (mut cel_rules, mut patterns) = (0, 0);
    let mut distinct_patterns: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, crd) in crds {
        let versions: Vec<&str> = crd.versions().collect();
        for version in &versions {
            let schema = crd.schema(version).expect("a served version has a schema");
            cel_rules += schema.cel_rules().len();
            patterns += schema.patterns().len();
            for pattern in schema.patterns() {
                *distinct_patterns
                    .entry(pattern.pattern.as_str())
                    .or_default() += 1;
            }
        }
        served.insert(format!("{}.{}", crd.kind(), crd.group()), versions);
    }
    let expected: BTreeMap<String, Vec<&str>> = [
        (
            "ClusterResourceSet.addons.cluster.x-k8s.io",
            vec!["v1beta1", "v1beta2"],
        ),
        ("HelmChartProxy.addons.cluster.x-k8s.io", vec!["v1alpha1"]),
        ("HelmReleaseProxy.addons.cluster.x-k8s.io", vec!["v1alpha1"]),
        (
            "KubeadmConfigTemplate.bootstrap.cluster.x-k8s.io",
            vec!["v1beta1", "v1beta2"],
        ),
        ("ClusterClass.cluster.x-k8s.io", vec!["v1beta1", "v1beta2"]),
        ("Cluster.cluster.x-k8s.io", vec!["v1beta1", "v1beta2"]),
        (
            "MachineDeployment.cluster.x-k8s.io",
            vec!["v1beta1", "v1beta2"],
        ),
        (
            "MachineHealthCheck.cluster.x-k8s.io",
            vec!["v1beta1", "v1beta2"],
        ),
        ("Machine.cluster.x-k8s.io", vec!["v1beta1", "v1beta2"]),
        ("MachineSet.cluster.x-k8s.io", vec!["v1beta1", "v1beta2"]),
        (
            "KubeadmControlPlane.controlplane.cluster.x-k8s.io",
            vec!["v1beta1", "v1beta2"],
        ),
        (
            "KubeadmControlPlaneTemplate.controlplane.cluster.x-k8s.io",
            vec!["v1beta1", "v1beta2"],
        ),
        // CAPO still lists v1alpha6 and v1alpha7, no longer served.
        (
            "OpenStackCluster.infrastructure.cluster.x-k8s.io",
            vec!["v1beta1"],
        ),
        (
            "OpenStackClusterTemplate.infrastructure.cluster.x-k8s.io",
            vec!["v1beta1"],
        ),
        (
            "OpenStackMachine.infrastructure.cluster.x-k8s.io",
            vec!["v1beta1"],
        ),
        (
            "OpenStackMachineTemplate.infrastructure.cluster.x-k8s.io",
            vec!["v1beta1"],
        ),
    ]
    .into_iter()
    .map(|(name, versions)| (name.to_owned(), versions))
    .collect();
    assert_eq!(served, expected);

    // Neither is evaluated: say how much is left to the real API server.
    println!(
        "{} served versions; not evaluated: {cel_rules} CEL rules, {patterns} patterns ({} distinct)",
        served.values().map(Vec::len).sum::<usize>(),
        distinct_patterns.len()
    );
    for (pattern, count) in &distinct_patterns {
        println!("  pattern x{count}: {pattern}");
    }
    assert!(cel_rules > 0 && patterns > 0);
}

#[test]
fn a_crd_document_that_is_not_one_is_refused() {
    let error = CrdSchemas::from_crd(&json!({"kind": "ConfigMap"})).expect_err("not a CRD");
    assert_eq!(error.to_string(), "kind: not a CustomResourceDefinition");

    let mut document: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(crds_directory().join("cluster.x-k8s.io_clusters.yaml"))
            .expect("readable"),
    )
    .expect("yaml");
    document["spec"]["versions"][1]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["properties"]["paused"]["$ref"] = json!("#/definitions/x");
    let error = CrdSchemas::from_crd(&document).expect_err("$ref is not structural");
    assert_eq!(
        error.to_string(),
        "spec.versions[1].schema.openAPIV3Schema.properties.spec.properties.paused.$ref: \
         not allowed in a structural schema"
    );
}

// ---------------------------------------------------------------------------------------------
// Valid objects of every kind the driver writes.

#[test]
fn minimal_objects_of_every_kind_the_driver_writes_are_valid() {
    // Each with a JSON pointer to an object deep inside, where a stray field must be caught:
    // the schemas are really applied, not trivially permissive.
    let objects = [
        (cluster(), "/spec/topology/workers/machineDeployments/0"),
        (
            cluster_class(),
            "/spec/workers/machineDeployments/0/bootstrap/templateRef",
        ),
        (
            openstack_cluster_template(),
            "/spec/template/spec/identityRef",
        ),
        (
            openstack_machine_template(),
            "/spec/template/spec/image/filter",
        ),
        (
            kubeadm_control_plane_template(),
            "/spec/template/spec/kubeadmConfigSpec/files/0/contentFrom/secret",
        ),
        (
            kubeadm_config_template(),
            "/spec/template/spec/joinConfiguration/nodeRegistration/kubeletExtraArgs/0",
        ),
        (helm_chart_proxy(), "/spec/options"),
        (
            machine_health_check(),
            "/spec/checks/unhealthyNodeConditions/0",
        ),
        (cluster_resource_set(), "/spec/resources/0"),
    ];
    for (mut object, pointer) in objects {
        assert_valid(&object);
        let kind = object["kind"].clone();
        object
            .pointer_mut(pointer)
            .and_then(Value::as_object_mut)
            .unwrap_or_else(|| panic!("{kind} has an object at {pointer}"))
            .insert("sneaky".to_owned(), json!(true));
        let path =
            pointer
                .trim_start_matches('/')
                .split('/')
                .fold(String::new(), |path, segment| {
                    match segment.parse::<usize>() {
                        Ok(index) => format!("{path}[{index}]"),
                        Err(_) if path.is_empty() => segment.to_owned(),
                        Err(_) => format!("{path}.{segment}"),
                    }
                });
        assert_violations(&object, &[&format!("unknown field \"{path}.sneaky\"")]);
    }
}

#[test]
fn cel_rules_that_applied_are_reported_as_unevaluated() {
    let report = check(&openstack_cluster_template());
    assert!(report.is_valid(), "{:#?}", report.violations);
    let rules: Vec<(&str, &str)> = report
        .unevaluated
        .iter()
        .filter_map(|unevaluated| match &unevaluated.check {
            UnevaluatedCheck::Cel { rule } => Some((unevaluated.path.as_str(), rule.as_str())),
            UnevaluatedCheck::Pattern { .. } => None,
        })
        .collect();
    for (path, rule) in &rules {
        println!("not evaluated at {path}: {rule}");
    }
    assert!(rules
        .iter()
        .any(|(path, _)| *path == "spec.template.spec.identityRef"));
    assert!(rules.iter().any(|(path, _)| *path == "spec.template.spec"));
    assert_eq!(report.unevaluated_total, report.unevaluated.len());
}

// ---------------------------------------------------------------------------------------------
// Each violation kind, with kube's path and wording.

#[test]
fn a_missing_required_field_is_reported() {
    let mut object = cluster();
    object["spec"]["topology"]
        .as_object_mut()
        .expect("topology")
        .remove("version");
    let violations = assert_violations(&object, &["spec.topology.version: Required value"]);
    assert_eq!(violations[0].kind, ViolationKind::Required);
    assert_eq!(violations[0].path, "spec.topology.version");
}

#[test]
fn a_value_of_the_wrong_type_is_reported() {
    let mut object = cluster();
    object["spec"]["topology"]["controlPlane"]["replicas"] = json!("three");
    let violations = assert_violations(
        &object,
        &[
            "spec.topology.controlPlane.replicas: Invalid value: \"string\": \
           spec.topology.controlPlane.replicas in body must be of type integer: \"string\"",
        ],
    );
    assert_eq!(violations[0].kind, ViolationKind::WrongType);

    // 1.0 is a number, not an integer, as for kube's JSON decoder.
    object["spec"]["topology"]["controlPlane"]["replicas"] = json!(1.0);
    assert_violations(
        &object,
        &[
            "spec.topology.controlPlane.replicas: Invalid value: \"number\": \
           spec.topology.controlPlane.replicas in body must be of type integer: \"number\"",
        ],
    );

    object["spec"]["topology"]["controlPlane"]["replicas"] = Value::Null;
    assert_violations(
        &object,
        &[
            "spec.topology.controlPlane.replicas: Invalid value: \"null\": \
           spec.topology.controlPlane.replicas in body must be of type integer: \"null\"",
        ],
    );
}

#[test]
fn unknown_fields_are_reported_at_the_top_and_nested() {
    let mut object = cluster();
    object["status2"] = json!({"phase": "Provisioned"});
    object["spec"]["foo"] = json!(1);
    object["spec"]["topology"]["workers"]["machineDeployments"][0]["bogus"] = json!({"x": 1});
    object["metadata"]["colour"] = json!("blue");
    let violations = assert_violations(
        &object,
        &[
            "unknown field \"metadata.colour\"",
            "unknown field \"spec.topology.workers.machineDeployments[0].bogus\"",
            "unknown field \"spec.foo\"",
            "unknown field \"status2\"",
        ],
    );
    assert!(violations
        .iter()
        .all(|violation| violation.kind == ViolationKind::UnknownField));
    assert_eq!(violations[3].path, "status2");
}

#[test]
fn a_duplicate_key_of_a_map_list_is_reported() {
    let mut object = cluster();
    object["spec"]["topology"]["workers"]["machineDeployments"] = json!([
        {"class": "default-worker", "name": "md-0"},
        {"class": "default-worker", "name": "md-1"},
        {"class": "gpu-worker", "name": "md-0"},
    ]);
    let violations = assert_violations(
        &object,
        &[
            "spec.topology.workers.machineDeployments[2]: Duplicate value: \
           map[string]interface {}{\"name\":\"md-0\"}",
        ],
    );
    assert_eq!(violations[0].kind, ViolationKind::Duplicate);
    assert_eq!(
        violations[0].path,
        "spec.topology.workers.machineDeployments[2]"
    );
}

#[test]
fn a_duplicate_item_of_a_set_list_is_reported() {
    let mut object = openstack_cluster_template();
    object["spec"]["template"]["spec"]["tags"] = json!(["magnum", "a", "magnum"]);
    assert_violations(
        &object,
        &["spec.template.spec.tags[2]: Duplicate value: \"magnum\""],
    );
}

#[test]
fn int_or_string_accepts_both_and_refuses_a_boolean() {
    let mut object = machine_health_check();
    let path = "spec.remediation.triggerIf.unhealthyLessThanOrEqualTo";
    for accepted in [json!("40%"), json!(3)] {
        object["spec"]["remediation"]["triggerIf"]["unhealthyLessThanOrEqualTo"] = accepted;
        assert_valid(&object);
    }
    object["spec"]["remediation"]["triggerIf"]["unhealthyLessThanOrEqualTo"] = json!(true);
    let violations = assert_violations(
        &object,
        &[&format!(
            "{path}: Invalid value: \"boolean\": {path} in body must be of type integer,string: \"boolean\""
        )],
    );
    assert_eq!(violations[0].kind, ViolationKind::WrongType);
    object["spec"]["remediation"]["triggerIf"]["unhealthyLessThanOrEqualTo"] = json!(2.5);
    assert_eq!(check(&object).violations.len(), 1);
}

#[test]
fn a_value_outside_an_enum_is_reported() {
    let mut object = cluster();
    object["spec"]["topology"]["controlPlane"]["taints"] =
        json!([{"key": "dedicated", "effect": "Sometimes", "propagation": "Always"}]);
    let violations = assert_violations(
        &object,
        &[
            "spec.topology.controlPlane.taints[0].effect: Unsupported value: \"Sometimes\": \
           supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\"",
        ],
    );
    assert_eq!(violations[0].kind, ViolationKind::NotSupported);
}

#[test]
fn more_items_than_max_items_are_reported() {
    let mut object = cluster();
    let deployments: Vec<Value> = (0..2001)
        .map(|index| json!({"class": "default-worker", "name": format!("md-{index}")}))
        .collect();
    object["spec"]["topology"]["workers"]["machineDeployments"] = Value::Array(deployments);
    let violations = assert_violations(
        &object,
        &["spec.topology.workers.machineDeployments: Too many: 2001: must have at most 2000 items"],
    );
    assert_eq!(violations[0].kind, ViolationKind::TooMany);

    object["spec"]["topology"]["workers"]["machineDeployments"] = json!([]);
    assert_violations(
        &object,
        &[
            "spec.topology.workers.machineDeployments: Invalid value: 0: \
           spec.topology.workers.machineDeployments in body should have at least 1 items",
        ],
    );
}

#[test]
fn a_preserve_unknown_fields_subtree_accepts_anything() {
    let mut object = cluster();
    object["spec"]["topology"]["variables"] = json!([
        {"name": "anything", "value": {"nested": {"list": [1, "two", null, {"x": [true]}]}, "n": 1.5}},
        {"name": "scalar", "value": null},
    ]);
    assert_valid(&object);
    // Declared fields beside it are still checked.
    object["spec"]["topology"]["variables"][0]["unknown"] = json!(1);
    assert_violations(
        &object,
        &["unknown field \"spec.topology.variables[0].unknown\""],
    );
}

#[test]
fn integer_formats_bound_their_values() {
    let mut object = cluster();
    object["spec"]["topology"]["controlPlane"]["replicas"] = json!(3_000_000_000_i64);
    let violations = assert_violations(
        &object,
        &[
            "spec.topology.controlPlane.replicas: Invalid value: 3000000000: \
           spec.topology.controlPlane.replicas in body must be of type int32: \"3000000000\"",
        ],
    );
    assert_eq!(violations[0].kind, ViolationKind::Format);
    object["spec"]["topology"]["controlPlane"]["replicas"] = json!(i32::MAX);
    assert_valid(&object);

    let schema = Schema::from_json(&json!({"type": "integer", "format": "int64"})).expect("schema");
    assert!(schema.validate(&json!(i64::MIN)).is_empty());
    assert_eq!(
        messages(&schema.validate(&json!(u64::MAX))),
        [
            "<root>: Invalid value: 18446744073709551615: <root> in body must be of type int64: \
          \"18446744073709551615\""
        ]
    );
}

#[test]
fn a_very_deep_value_is_refused_without_overflowing_the_stack() {
    // Built by moving values in: `json!` would serialize (and recurse into) an interpolated one.
    let nest = |inner: Value, levels: usize, wrap: &dyn Fn(Value) -> Value| {
        (0..levels).fold(inner, |inner, _| wrap(inner))
    };
    let deep = nest(json!("bottom"), 10_000, &|inner| {
        Value::Object(serde_json::Map::from_iter([("x".to_owned(), inner)]))
    });
    let mut variable = json!({"name": "deep"});
    variable["value"] = deep;
    let mut object = Deep(cluster());
    object.0["spec"]["topology"]["variables"] = Value::Array(vec![variable]);
    // The variable's value keeps undeclared fields: the first one holds the deep subtree.
    let violations = assert_violations(
        &object.0,
        &[
            "spec.topology.variables[0].value.x: Invalid value: \"object\": \
           must not be nested deeper than 64 levels",
        ],
    );
    assert_eq!(violations[0].kind, ViolationKind::TooDeep);

    // Through typed schemas too: the walk stops at an unknown field or at the bound.
    let map_of_objects = Schema::from_json(&json!({
        "type": "object",
        "additionalProperties": {"type": "object", "properties": {"x": {"type": "object"}}},
    }))
    .expect("schema");
    let deep = Deep(object.0["spec"]["topology"]["variables"][0]["value"].take());
    let violations = map_of_objects.validate(&deep.0);
    assert_eq!(messages(&violations), ["unknown field \"x.x.x\""]);
    let recursive = Schema::from_json(&json!({
        "type": "object", "x-kubernetes-preserve-unknown-fields": true,
        "properties": {"x": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
    }))
    .expect("schema");
    let violations = recursive.validate(&deep.0);
    assert_eq!(violations.len(), 1, "{violations:#?}");
    assert_eq!(violations[0].path, "x.x");
    assert_eq!(violations[0].kind, ViolationKind::TooDeep);

    // A schema nested as deep is refused as well.
    let deep_schema = Deep(nest(json!({"type": "string"}), 10_000, &|inner| {
        let mut schema = json!({"type": "object", "properties": {}});
        schema["properties"]["x"] = inner;
        schema
    }));
    let error = Schema::from_json(&deep_schema.0).expect_err("too deep");
    assert!(error.message.contains("deeper than 64"), "{error}");
}

#[test]
fn object_metadata_is_checked_as_kube_does() {
    let mut object = cluster();
    object["metadata"]["name"] = json!("K8s_Cluster");
    object["metadata"]["labels"] = json!({"bad key!": "v", "ok": "-bad-value"});
    let violations = check(&object).violations;
    let found = messages(&violations);
    assert_eq!(found.len(), 3, "{found:#?}");
    assert!(found[0].starts_with(
        "metadata.name: Invalid value: \"K8s_Cluster\": a lowercase RFC 1123 subdomain"
    ));
    assert!(found[1].starts_with("metadata.labels: Invalid value: \"bad key!\": name part must"));
    assert!(found[2].starts_with("metadata.labels: Invalid value: \"-bad-value\": a valid label"));

    let mut annotated = cluster();
    annotated["metadata"]["annotations"] =
        json!({"magnum.openstack.org/blob": "x".repeat(300 * 1024)});
    assert_violations(
        &annotated,
        &["metadata.annotations: Too long: may not be more than 262144 bytes"],
    );

    let mut unnamed = cluster();
    unnamed["metadata"]
        .as_object_mut()
        .expect("metadata")
        .remove("name");
    assert_violations(
        &unnamed,
        &["metadata.name: Required value: name or generateName is required"],
    );
}

#[test]
fn the_api_version_and_kind_must_be_the_crds() {
    let mut object = cluster();
    object["apiVersion"] = json!("cluster.x-k8s.io/v1alpha3");
    let crd = crd("cluster.x-k8s.io", "Cluster");
    assert_eq!(
        messages(&crd.validate_object(&object)),
        [
            "apiVersion: Unsupported value: \"cluster.x-k8s.io/v1alpha3\": supported values: \
          \"cluster.x-k8s.io/v1beta1\", \"cluster.x-k8s.io/v1beta2\""
        ]
    );
    let mut object = cluster();
    object["kind"] = json!("ClusterClass");
    assert_eq!(
        messages(&crd.validate_object(&object)),
        ["kind: Unsupported value: \"ClusterClass\": supported values: \"Cluster\""]
    );
}

#[test]
fn violations_are_capped() {
    let mut object = cluster();
    for index in 0..(MAX_VIOLATIONS + 50) {
        object["spec"][format!("unknown{index}")] = json!(index);
    }
    let report = check(&object);
    assert_eq!(report.violations.len(), MAX_VIOLATIONS);
    assert!(report.truncated);
}

// ---------------------------------------------------------------------------------------------
// Keywords the CRDs above do not exercise, on small schemas.

#[test]
fn lengths_count_characters_and_bounds_follow_exclusivity() {
    let schema = Schema::from_json(&json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 2, "maxLength": 3},
            "ratio": {"type": "number", "minimum": 0, "maximum": 1, "exclusiveMaximum": true},
            "count": {"type": "integer", "multipleOf": 2},
            "when": {"type": "string", "format": "date-time"},
            "id": {"type": "string", "format": "uuid"},
        },
    }))
    .expect("schema");
    let valid = json!({"name": "äöü", "ratio": 0.5, "count": 4, "when": "2026-05-01T10:00:00Z",
                       "id": "6f1b2c1e-3f7a-4b7e-9b8e-2d3c4a5b6c7d"});
    assert!(schema.validate(&valid).is_empty());
    let invalid =
        json!({"name": "abcd", "ratio": 1, "count": 3, "when": "2026-02-30T10:00:00Z", "id": "x"});
    assert_eq!(
        messages(&schema.validate(&invalid)),
        [
            "name: Too long: may not be more than 3 bytes",
            "ratio: Invalid value: 1: ratio in body should be less than 1",
            "count: Invalid value: 3: count in body should be a multiple of 2",
            "when: Invalid value: \"2026-02-30T10:00:00Z\": when in body must be of type date-time: \
             \"2026-02-30T10:00:00Z\"",
            "id: Invalid value: \"x\": id in body must be of type uuid: \"x\"",
        ]
    );
    assert_eq!(
        messages(&schema.validate(&json!({"name": "a"}))),
        ["name: Invalid value: \"a\": name in body should be at least 2 chars long"]
    );
}

#[test]
fn nullable_allows_null_only_where_declared() {
    let schema = Schema::from_json(&json!({
        "type": "object",
        "properties": {
            "maybe": {"type": "string", "nullable": true},
            "never": {"type": "string"},
        },
    }))
    .expect("schema");
    assert!(schema.validate(&json!({"maybe": null})).is_empty());
    assert_eq!(
        messages(&schema.validate(&json!({"never": null}))),
        ["never: Invalid value: \"null\": never in body must be of type string: \"null\""]
    );
}

#[test]
fn compositions_validate_values_only() {
    let schema = Schema::from_json(&json!({
        "type": "object",
        "properties": {
            "a": {"type": "string"},
            "b": {"type": "string"},
            "port": {"type": "integer", "not": {"enum": [0]}},
        },
        "oneOf": [{"required": ["a"]}, {"required": ["b"]}],
        "anyOf": [{"properties": {"a": {"maxLength": 2}}}, {"properties": {"b": {"maxLength": 2}}}],
    }))
    .expect("schema");
    assert!(schema.validate(&json!({"a": "x"})).is_empty());
    assert_eq!(
        messages(&schema.validate(&json!({"a": "xyz", "b": "xyz"}))),
        [
            "<root>: Invalid value: map[string]interface {}{\"a\":\"xyz\", \"b\":\"xyz\"}: <root> in \
             body must validate at least one schema (anyOf)",
            "<root>: Invalid value: map[string]interface {}{\"a\":\"xyz\", \"b\":\"xyz\"}: <root> in \
             body must validate one and only one schema (oneOf)",
        ]
    );
    assert_eq!(
        messages(&schema.validate(&json!({"a": "x", "port": 0}))),
        ["port: Invalid value: 0: port in body must not validate the schema (not)"]
    );
}

#[test]
fn an_embedded_resource_needs_api_version_and_kind_and_proper_metadata() {
    let schema = Schema::from_json(&json!({
        "type": "object",
        "properties": {"manifest": {
            "type": "object",
            "x-kubernetes-embedded-resource": true,
            "x-kubernetes-preserve-unknown-fields": true,
        }},
    }))
    .expect("schema");
    let valid = json!({"manifest": {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "cm", "labels": {"a": "b"}},
        "data": {"anything": "goes"},
    }});
    assert!(schema.validate(&valid).is_empty());
    let invalid =
        json!({"manifest": {"apiVersion": "v1", "metadata": {"name": "CM", "colour": 1}}});
    let found = messages(&schema.validate(&invalid));
    assert_eq!(found.len(), 3, "{found:#?}");
    assert_eq!(found[0], "manifest.kind: Required value: must not be empty");
    assert_eq!(found[1], "unknown field \"manifest.metadata.colour\"");
    assert!(
        found[2].starts_with("manifest.metadata.name: Invalid value: \"CM\": a lowercase RFC 1123")
    );
}

#[test]
fn a_map_list_item_without_its_key_is_reported() {
    let schema = Schema::from_json(&json!({
        "type": "array",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["name"],
        "items": {"type": "object", "properties": {"name": {"type": "string"}, "v": {"type": "integer"}}},
    }))
    .expect("schema");
    assert_eq!(
        messages(&schema.validate(&json!([{"name": "a"}, {"v": 1}]))),
        ["[1].name: Required value"]
    );
}

#[test]
fn unknown_keywords_are_refused_in_schemas() {
    let error = Schema::from_json(&json!({"type": "object", "properties": {"a": {"typo": 1}}}))
        .expect_err("unknown keyword");
    assert_eq!(error.to_string(), "properties.a.typo: unknown keyword");
    let error = Schema::from_json(&json!({"type": "array", "x-kubernetes-list-type": "map"}))
        .expect_err("no keys");
    assert_eq!(
        error.to_string(),
        "x-kubernetes-list-map-keys: must not be empty if x-kubernetes-list-type is map"
    );
}

// ---------------------------------------------------------------------------------------------
// ClusterClass variables.

#[test]
fn class_variable_schemas_validate_topology_variable_values() {
    let class = cluster_class();
    let variables = ClassVariables::from_cluster_class(&class).expect("variables");
    assert_eq!(
        variables.names().collect::<Vec<_>>(),
        [
            "imageRepository",
            "workerFlavor",
            "etcd",
            "dnsNameservers",
            "extraValues"
        ]
    );
    let good = cluster();
    assert!(variables.check_cluster(&good).is_valid());
    assert_valid(&good);

    let mut bad = cluster();
    bad["spec"]["topology"]["variables"] = json!([
        {"name": "imageRepository", "value": 42},
        {"name": "etcd", "value": {"diskSizeGiB": 0, "bogus": true}},
        {"name": "dnsNameservers", "value": ["8.8.8.8", "dns.example", "1.1.1.1", "9.9.9.9"]},
        {"name": "nope", "value": "x"},
        {"name": "extraValues", "value": {"anything": {"goes": [1, 2]}}},
    ]);
    bad["spec"]["topology"]["workers"]["machineDeployments"][0]["variables"] =
        json!({"overrides": [{"name": "workerFlavor", "value": ""}]});
    // The Cluster CRD itself accepts any value: only the class's schemas catch these.
    assert_valid(&bad);
    let report = variables.check_cluster(&bad);
    assert_eq!(
        messages(&report.violations),
        [
            "spec.topology.variables[0].value: Invalid value: \"integer\": \
             spec.topology.variables[0].value in body must be of type string: \"integer\"",
            "spec.topology.variables[1].value.diskSizeGiB: Invalid value: 0: \
             spec.topology.variables[1].value.diskSizeGiB in body should be greater than or equal to 1",
            "unknown field \"spec.topology.variables[1].value.bogus\"",
            "spec.topology.variables[2].value: Too many: 4: must have at most 3 items",
            "spec.topology.variables[2].value[1]: Invalid value: \"dns.example\": \
             spec.topology.variables[2].value[1] in body must be of type ipv4: \"dns.example\"",
            "spec.topology.variables[3].name: Unsupported value: \"nope\": supported values: \
             \"imageRepository\", \"workerFlavor\", \"etcd\", \"dnsNameservers\", \"extraValues\"",
            "spec.topology.variables: Required value: required variable \"workerFlavor\" must be set",
            "spec.topology.workers.machineDeployments[0].variables.overrides[0].value: Invalid value: \
             \"\": spec.topology.workers.machineDeployments[0].variables.overrides[0].value in body \
             should be at least 1 chars long",
        ]
    );
    let kinds: Vec<ViolationKind> = report
        .violations
        .iter()
        .map(|violation| violation.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            ViolationKind::WrongType,
            ViolationKind::OutOfRange,
            ViolationKind::UnknownField,
            ViolationKind::TooMany,
            ViolationKind::Format,
            ViolationKind::NotSupported,
            ViolationKind::Required,
            ViolationKind::TooShort,
        ]
    );
}

#[test]
fn a_class_with_an_invalid_variable_schema_is_refused() {
    let mut class = cluster_class();
    class["spec"]["variables"][2]["schema"]["openAPIV3Schema"]["properties"]["diskSizeGiB"]
        ["type"] = json!("int");
    let error = ClassVariables::from_cluster_class(&class).expect_err("bad type");
    assert_eq!(
        error.to_string(),
        "spec.variables[2].schema.openAPIV3Schema.properties.diskSizeGiB.type: unknown type \"int\""
    );
}
