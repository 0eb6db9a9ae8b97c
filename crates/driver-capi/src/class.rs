//! Our ClusterClass (`magnum-rs-v<N>`) and the four templates it points at.
//!
//! The class is the contract between the driver and CAPI's topology controller: each Magnum
//! setting reaches the machines as a class variable, and a JSON patch of the class moves it
//! into the generated objects. Every patch takes its value straight from a variable
//! (`valueFrom.variable`), never from a Go template, so that what a variable's schema admits
//! is exactly what lands in the object; `enabledIf` is the only template, and only tests a
//! variable's presence. The driver renders every variable on every Cluster (empty when
//! unset), so no template ever meets a missing key.

use serde_json::{json, Value};

use crate::settings::Settings;

pub const CAPI_GROUP_VERSION: &str = "cluster.x-k8s.io/v1beta2";
pub const CONTROL_PLANE_GROUP_VERSION: &str = "controlplane.cluster.x-k8s.io/v1beta2";
pub const BOOTSTRAP_GROUP_VERSION: &str = "bootstrap.cluster.x-k8s.io/v1beta2";
pub const INFRASTRUCTURE_GROUP_VERSION: &str = "infrastructure.cluster.x-k8s.io/v1beta1";
pub const ADDONS_GROUP_VERSION: &str = "addons.cluster.x-k8s.io/v1beta2";
pub const HELM_GROUP_VERSION: &str = "addons.cluster.x-k8s.io/v1alpha1";

/// The worker class every nodegroup's MachineDeployment uses.
pub const WORKER_CLASS: &str = "default-worker";

/// A CAPO image id is validated as a uuid by the API server, so the templates carry this one
/// until the `imageUUID` variable replaces it in every generated object.
const UNSET_IMAGE: &str = "00000000-0000-0000-0000-000000000000";

/// The names of the class and of its templates.
#[derive(Debug, Clone)]
pub struct ClassNames {
    pub class: String,
    pub cluster_template: String,
    pub control_plane_template: String,
    pub control_plane_machine_template: String,
    pub worker_machine_template: String,
    pub worker_bootstrap_template: String,
}

impl ClassNames {
    pub fn new(settings: &Settings) -> Self {
        let class = settings.class_name();
        Self {
            cluster_template: format!("{class}-cluster"),
            control_plane_template: format!("{class}-control-plane"),
            control_plane_machine_template: format!("{class}-control-plane-machine"),
            worker_machine_template: format!("{class}-worker-machine"),
            worker_bootstrap_template: format!("{class}-worker-bootstrap"),
            class,
        }
    }
}

/// One variable of the class: its name and the schema its values must satisfy.
struct Variable {
    name: &'static str,
    required: bool,
    schema: Value,
}

/// Names of the class variables, as the Cluster sets them.
pub mod variable {
    pub const IDENTITY_REF_NAME: &str = "identityRefName";
    pub const IMAGE_UUID: &str = "imageUUID";
    pub const CONTROL_PLANE_FLAVOR: &str = "controlPlaneFlavor";
    pub const FLAVOR: &str = "flavor";
    pub const EXTERNAL_NETWORK: &str = "externalNetwork";
    pub const NETWORK: &str = "network";
    pub const SUBNETS: &str = "subnets";
    pub const MANAGED_SUBNETS: &str = "managedSubnets";
    pub const API_SERVER_LOAD_BALANCER: &str = "apiServerLoadBalancer";
    pub const DISABLE_API_SERVER_FLOATING_IP: &str = "disableAPIServerFloatingIP";
    pub const CONTROL_PLANE_AVAILABILITY_ZONES: &str = "controlPlaneAvailabilityZones";
    pub const SSH_KEY_NAME: &str = "sshKeyName";
    pub const ROOT_VOLUME: &str = "rootVolume";
    pub const OPERATING_SYSTEM: &str = "operatingSystem";
    pub const API_SERVER_PORT: &str = "apiServerPort";
}

fn string(max_length: u32) -> Value {
    json!({"type": "string", "maxLength": max_length})
}

fn reference() -> Value {
    json!({
        "type": "object",
        "properties": {"id": {"type": "string", "maxLength": 255}},
        "required": ["id"],
    })
}

fn variables() -> Vec<Variable> {
    use variable::*;
    let variable = |name, required, schema| Variable {
        name,
        required,
        schema,
    };
    vec![
        variable(
            IDENTITY_REF_NAME,
            true,
            json!({"type": "string", "minLength": 1, "maxLength": 253}),
        ),
        variable(
            IMAGE_UUID,
            true,
            json!({"type": "string", "format": "uuid", "minLength": 36, "maxLength": 36}),
        ),
        variable(
            CONTROL_PLANE_FLAVOR,
            true,
            json!({"type": "string", "minLength": 1, "maxLength": 255}),
        ),
        variable(
            FLAVOR,
            true,
            json!({"type": "string", "minLength": 1, "maxLength": 255}),
        ),
        // Empty id: no external network (disableExternalNetwork).
        variable(EXTERNAL_NETWORK, true, reference()),
        variable(NETWORK, true, reference()),
        variable(
            SUBNETS,
            true,
            json!({"type": "array", "maxItems": 1, "items": reference()}),
        ),
        variable(
            MANAGED_SUBNETS,
            true,
            json!({
                "type": "array",
                "maxItems": 1,
                "items": {
                    "type": "object",
                    "properties": {
                        "cidr": string(43),
                        "dnsNameservers": {"type": "array", "maxItems": 8, "items": string(45)},
                    },
                    "required": ["cidr"],
                },
            }),
        ),
        variable(API_SERVER_LOAD_BALANCER, true, json!({"type": "boolean"})),
        variable(
            DISABLE_API_SERVER_FLOATING_IP,
            true,
            json!({"type": "boolean"}),
        ),
        variable(
            CONTROL_PLANE_AVAILABILITY_ZONES,
            true,
            json!({"type": "array", "maxItems": 16, "items": string(255)}),
        ),
        variable(SSH_KEY_NAME, true, string(255)),
        // Size 0: boot from the flavor's own disk.
        variable(
            ROOT_VOLUME,
            true,
            json!({
                "type": "object",
                "properties": {
                    "sizeGiB": {"type": "integer", "minimum": 0, "maximum": 65536},
                    "type": string(255),
                },
                "required": ["sizeGiB"],
            }),
        ),
        variable(
            OPERATING_SYSTEM,
            true,
            json!({"type": "string", "enum": ["ubuntu", "flatcar"]}),
        ),
        // 0: CAPO's default (6443).
        variable(
            API_SERVER_PORT,
            true,
            json!({"type": "integer", "minimum": 0, "maximum": 65535}),
        ),
    ]
}

/// A patch definition selecting one kind of template.
fn definition(selector: Value, patches: Vec<Value>) -> Value {
    json!({"selector": selector, "jsonPatches": patches})
}

fn set_from(op: &str, path: &str, variable: &str) -> Value {
    json!({"op": op, "path": path, "valueFrom": {"variable": variable}})
}

fn selector(api_version: &str, kind: &str, resources: Value) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "matchResources": resources})
}

fn patch(name: &str, enabled_if: Option<&str>, definitions: Vec<Value>) -> Value {
    let mut patch = json!({"name": name, "definitions": definitions});
    if let Some(condition) = enabled_if {
        patch["enabledIf"] = json!(condition);
    }
    patch
}

fn patches() -> Vec<Value> {
    use variable::*;
    let infrastructure_cluster = || {
        selector(
            INFRASTRUCTURE_GROUP_VERSION,
            "OpenStackClusterTemplate",
            json!({"infrastructureCluster": true}),
        )
    };
    let control_plane_machine = || {
        selector(
            INFRASTRUCTURE_GROUP_VERSION,
            "OpenStackMachineTemplate",
            json!({"controlPlane": true}),
        )
    };
    let worker_machine = || {
        selector(
            INFRASTRUCTURE_GROUP_VERSION,
            "OpenStackMachineTemplate",
            json!({"machineDeploymentClass": {"names": [WORKER_CLASS]}}),
        )
    };
    let control_plane = || {
        selector(
            CONTROL_PLANE_GROUP_VERSION,
            "KubeadmControlPlaneTemplate",
            json!({"controlPlane": true}),
        )
    };
    let worker_bootstrap = || {
        selector(
            BOOTSTRAP_GROUP_VERSION,
            "KubeadmConfigTemplate",
            json!({"machineDeploymentClass": {"names": [WORKER_CLASS]}}),
        )
    };
    let spec = "/spec/template/spec";
    vec![
        patch(
            "cloud",
            None,
            vec![definition(
                infrastructure_cluster(),
                vec![
                    set_from(
                        "replace",
                        &format!("{spec}/identityRef/name"),
                        IDENTITY_REF_NAME,
                    ),
                    set_from(
                        "replace",
                        &format!("{spec}/apiServerLoadBalancer/enabled"),
                        API_SERVER_LOAD_BALANCER,
                    ),
                    set_from(
                        "replace",
                        &format!("{spec}/disableAPIServerFloatingIP"),
                        DISABLE_API_SERVER_FLOATING_IP,
                    ),
                ],
            )],
        ),
        patch(
            "externalNetwork",
            Some("{{ if .externalNetwork.id }}true{{ end }}"),
            vec![definition(
                infrastructure_cluster(),
                vec![set_from(
                    "add",
                    &format!("{spec}/externalNetwork"),
                    EXTERNAL_NETWORK,
                )],
            )],
        ),
        patch(
            "noExternalNetwork",
            Some("{{ if not .externalNetwork.id }}true{{ end }}"),
            vec![definition(
                infrastructure_cluster(),
                vec![
                    json!({"op": "add", "path": format!("{spec}/disableExternalNetwork"), "value": true}),
                ],
            )],
        ),
        patch(
            "network",
            Some("{{ if .network.id }}true{{ end }}"),
            vec![definition(
                infrastructure_cluster(),
                vec![set_from("add", &format!("{spec}/network"), NETWORK)],
            )],
        ),
        patch(
            "subnets",
            Some("{{ if .subnets }}true{{ end }}"),
            vec![definition(
                infrastructure_cluster(),
                vec![set_from("add", &format!("{spec}/subnets"), SUBNETS)],
            )],
        ),
        patch(
            "managedSubnets",
            Some("{{ if .managedSubnets }}true{{ end }}"),
            vec![definition(
                infrastructure_cluster(),
                vec![set_from(
                    "add",
                    &format!("{spec}/managedSubnets"),
                    MANAGED_SUBNETS,
                )],
            )],
        ),
        // The load balancer listens where kube-apiserver binds (clusterNetwork.apiServerPort).
        patch(
            "apiServerPort",
            Some("{{ if .apiServerPort }}true{{ end }}"),
            vec![definition(
                infrastructure_cluster(),
                vec![set_from(
                    "add",
                    &format!("{spec}/apiServerPort"),
                    API_SERVER_PORT,
                )],
            )],
        ),
        patch(
            "controlPlaneAvailabilityZones",
            Some("{{ if .controlPlaneAvailabilityZones }}true{{ end }}"),
            vec![definition(
                infrastructure_cluster(),
                vec![set_from(
                    "add",
                    &format!("{spec}/controlPlaneAvailabilityZones"),
                    CONTROL_PLANE_AVAILABILITY_ZONES,
                )],
            )],
        ),
        patch(
            "machines",
            None,
            vec![
                definition(
                    control_plane_machine(),
                    vec![
                        set_from("replace", &format!("{spec}/flavor"), CONTROL_PLANE_FLAVOR),
                        set_from("replace", &format!("{spec}/image/id"), IMAGE_UUID),
                    ],
                ),
                definition(
                    worker_machine(),
                    vec![
                        set_from("replace", &format!("{spec}/flavor"), FLAVOR),
                        set_from("replace", &format!("{spec}/image/id"), IMAGE_UUID),
                    ],
                ),
            ],
        ),
        patch(
            "sshKeyName",
            Some("{{ if .sshKeyName }}true{{ end }}"),
            vec![
                definition(
                    control_plane_machine(),
                    vec![set_from("add", &format!("{spec}/sshKeyName"), SSH_KEY_NAME)],
                ),
                definition(
                    worker_machine(),
                    vec![set_from("add", &format!("{spec}/sshKeyName"), SSH_KEY_NAME)],
                ),
            ],
        ),
        patch(
            "rootVolume",
            Some("{{ if .rootVolume.sizeGiB }}true{{ end }}"),
            vec![
                definition(
                    control_plane_machine(),
                    vec![set_from("add", &format!("{spec}/rootVolume"), ROOT_VOLUME)],
                ),
                definition(
                    worker_machine(),
                    vec![set_from("add", &format!("{spec}/rootVolume"), ROOT_VOLUME)],
                ),
            ],
        ),
        // Flatcar boots from Ignition, not cloud-init.
        patch(
            "flatcar",
            Some("{{ if eq .operatingSystem \"flatcar\" }}true{{ end }}"),
            vec![
                definition(
                    control_plane(),
                    vec![
                        json!({"op": "add", "path": "/spec/template/spec/kubeadmConfigSpec/format", "value": "ignition"}),
                    ],
                ),
                definition(
                    worker_bootstrap(),
                    vec![
                        json!({"op": "add", "path": "/spec/template/spec/format", "value": "ignition"}),
                    ],
                ),
            ],
        ),
    ]
}

fn metadata(name: &str, settings: &Settings) -> Value {
    json!({
        "name": name,
        "namespace": settings.namespace,
        "labels": {crate::names::label::MANAGED_BY: crate::names::label::MANAGED_BY_VALUE},
    })
}

fn template_ref(api_version: &str, kind: &str, name: &str) -> Value {
    json!({"templateRef": {"apiVersion": api_version, "kind": kind, "name": name}})
}

/// Nodes whose kubelet has not been Ready for this long are replaced (when the cluster has
/// `auto_healing_enabled`).
const UNHEALTHY_AFTER_SECONDS: u32 = 300;
/// A machine whose node never appeared is replaced after this long.
const NODE_STARTUP_TIMEOUT_SECONDS: u32 = 1200;
/// Volumes a deleted machine still holds are given this long to detach.
const VOLUME_DETACH_TIMEOUT_SECONDS: u32 = 300;

fn health_checks() -> Value {
    json!({
        "checks": {
            "nodeStartupTimeoutSeconds": NODE_STARTUP_TIMEOUT_SECONDS,
            "unhealthyNodeConditions": [
                {"type": "Ready", "status": "False", "timeoutSeconds": UNHEALTHY_AFTER_SECONDS},
                {"type": "Ready", "status": "Unknown", "timeoutSeconds": UNHEALTHY_AFTER_SECONDS},
            ],
        },
        // More than 40 % of the machines unhealthy at once is an outage of the cloud, not of
        // the machines: replacing them all would only make it worse.
        "remediation": {"triggerIf": {"unhealthyLessThanOrEqualTo": "40%"}},
    })
}

/// The ClusterClass.
pub fn cluster_class(settings: &Settings) -> Value {
    let names = ClassNames::new(settings);
    let variables: Vec<Value> = variables()
        .into_iter()
        .map(|variable| {
            json!({
                "name": variable.name,
                "required": variable.required,
                "schema": {"openAPIV3Schema": variable.schema},
            })
        })
        .collect();
    let mut control_plane = template_ref(
        CONTROL_PLANE_GROUP_VERSION,
        "KubeadmControlPlaneTemplate",
        &names.control_plane_template,
    );
    control_plane["machineInfrastructure"] = template_ref(
        INFRASTRUCTURE_GROUP_VERSION,
        "OpenStackMachineTemplate",
        &names.control_plane_machine_template,
    );
    control_plane["healthCheck"] = health_checks();
    control_plane["deletion"] =
        json!({"nodeVolumeDetachTimeoutSeconds": VOLUME_DETACH_TIMEOUT_SECONDS});
    let mut worker = json!({"class": WORKER_CLASS});
    worker["bootstrap"] = template_ref(
        BOOTSTRAP_GROUP_VERSION,
        "KubeadmConfigTemplate",
        &names.worker_bootstrap_template,
    );
    worker["infrastructure"] = template_ref(
        INFRASTRUCTURE_GROUP_VERSION,
        "OpenStackMachineTemplate",
        &names.worker_machine_template,
    );
    worker["healthCheck"] = health_checks();
    worker["deletion"] = json!({"nodeVolumeDetachTimeoutSeconds": VOLUME_DETACH_TIMEOUT_SECONDS});
    json!({
        "apiVersion": CAPI_GROUP_VERSION,
        "kind": "ClusterClass",
        "metadata": metadata(&names.class, settings),
        "spec": {
            "infrastructure": template_ref(
                INFRASTRUCTURE_GROUP_VERSION,
                "OpenStackClusterTemplate",
                &names.cluster_template,
            ),
            "controlPlane": control_plane,
            "workers": {"machineDeployments": [worker]},
            "variables": variables,
            "patches": patches(),
        },
    })
}

/// kubelet defers node addresses and volumes to the external OpenStack cloud provider.
fn node_registration() -> Value {
    json!({"kubeletExtraArgs": [{"name": "cloud-provider", "value": "external"}]})
}

fn machine_template(name: &str, settings: &Settings) -> Value {
    json!({
        "apiVersion": INFRASTRUCTURE_GROUP_VERSION,
        "kind": "OpenStackMachineTemplate",
        "metadata": metadata(name, settings),
        "spec": {"template": {"spec": {
            // Both are replaced from the class variables in every generated object.
            "flavor": "set-by-the-cluster-topology",
            "image": {"id": UNSET_IMAGE},
        }}},
    })
}

/// The ClusterClass and its templates, templates first (the class refers to them).
pub fn class_objects(settings: &Settings) -> Vec<Value> {
    let names = ClassNames::new(settings);
    let cluster_template = json!({
        "apiVersion": INFRASTRUCTURE_GROUP_VERSION,
        "kind": "OpenStackClusterTemplate",
        "metadata": metadata(&names.cluster_template, settings),
        "spec": {"template": {"spec": {
            "identityRef": {"type": "Secret", "name": "set-by-the-cluster-topology", "cloudName": "openstack"},
            "apiServerLoadBalancer": {"enabled": true},
            "disableAPIServerFloatingIP": false,
            "managedSecurityGroups": {"allowAllInClusterTraffic": true},
        }}},
    });
    let control_plane_template = json!({
        "apiVersion": CONTROL_PLANE_GROUP_VERSION,
        "kind": "KubeadmControlPlaneTemplate",
        "metadata": metadata(&names.control_plane_template, settings),
        "spec": {"template": {"spec": {
            "kubeadmConfigSpec": {
                "initConfiguration": {"nodeRegistration": node_registration()},
                "joinConfiguration": {"nodeRegistration": node_registration()},
                // kube-apiserver has no --cloud-provider since Kubernetes 1.33.
                "clusterConfiguration": {
                    "controllerManager": {"extraArgs": [{"name": "cloud-provider", "value": "external"}]},
                },
            },
        }}},
    });
    let worker_bootstrap_template = json!({
        "apiVersion": BOOTSTRAP_GROUP_VERSION,
        "kind": "KubeadmConfigTemplate",
        "metadata": metadata(&names.worker_bootstrap_template, settings),
        "spec": {"template": {"spec": {
            "joinConfiguration": {"nodeRegistration": node_registration()},
        }}},
    });
    vec![
        cluster_template,
        machine_template(&names.control_plane_machine_template, settings),
        machine_template(&names.worker_machine_template, settings),
        control_plane_template,
        worker_bootstrap_template,
        cluster_class(settings),
    ]
}

/// The class variables' schemas by name, to check a Cluster's values before it is applied
/// (what CAPI's webhook would otherwise refuse with a 422 after the fact).
pub fn variable_schemas() -> Vec<(&'static str, bool, Value)> {
    variables()
        .into_iter()
        .map(|variable| (variable.name, variable.required, variable.schema))
        .collect()
}
