//! A Magnum cluster as the Cluster API objects that build it: pure functions, no IO.
//!
//! The CAPI `Cluster` is rendered whole, every time, from the stored cluster, its template
//! and its nodegroups, and written with server-side apply under one field manager: a field
//! this rendering stops setting is released, a nodegroup it stops listing is removed.

use std::collections::HashMap;
use std::net::IpAddr;

use magnum_domain::cluster::{Cluster, ClusterStatus, NodeGroup};
use magnum_domain::cluster_template::ClusterTemplate;
use serde_json::{json, Map, Value};

use crate::class::{variable, ADDONS_GROUP_VERSION, CAPI_GROUP_VERSION, WORKER_CLASS};
use crate::names::{self, label, CaPurpose};
use crate::settings::Settings;

/// Why a cluster cannot be rendered; the message is for the tenant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("Invalid label {label}={value:?}: {reason}")]
    InvalidLabel {
        label: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("The cluster has no {0}; set it on the cluster or its template.")]
    Missing(&'static str),
    #[error("The {what} {reference:?} could not be resolved to an OpenStack id.")]
    Unresolved {
        what: &'static str,
        reference: String,
    },
    #[error("master nodegroup size of {0} is invalid, size cannot be an even number.")]
    EvenControlPlane(i64),
    #[error(
        "Nodegroups {first:?} and {second:?} map to the same machine deployment name {name:?}."
    )]
    NodegroupNameClash {
        first: String,
        second: String,
        name: String,
    },
}

/// OpenStack ids the driver looked up for the references a cluster makes by name or id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolved {
    /// Glance image reference (as stored) → image uuid.
    pub images: HashMap<String, String>,
    /// Nova flavor reference (as stored) → flavor name, which CAPO looks flavors up by.
    pub flavors: HashMap<String, String>,
    pub external_network_id: Option<String>,
    pub fixed_network_id: Option<String>,
    pub fixed_subnet_id: Option<String>,
    /// The `os_distro` of the cluster's image (ubuntu, flatcar, …).
    pub os_distro: String,
}

/// Everything a cluster's rendering depends on.
#[derive(Debug, Clone, Copy)]
pub struct ClusterInput<'a> {
    pub cluster: &'a Cluster,
    pub template: &'a ClusterTemplate,
    pub nodegroups: &'a [NodeGroup],
    pub resolved: &'a Resolved,
    /// Machines created before this time are rolled (CA rotation), RFC 3339.
    pub rollout_after: Option<&'a str>,
}

/// The label defaults a cluster gets when neither it nor its template sets them.
pub const DEFAULT_POD_CIDR: &str = "10.100.0.0/16";
pub const DEFAULT_SERVICE_CIDR: &str = "10.254.0.0/16";
pub const DEFAULT_SERVICE_DOMAIN: &str = "cluster.local";
pub const DEFAULT_NODE_CIDR: &str = "10.0.0.0/24";

/// The CNI a cluster gets from its template's `network_driver`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cni {
    Calico,
    Cilium,
    Flannel,
}

impl Cni {
    pub fn from_network_driver(driver: Option<&str>) -> Result<Self, RenderError> {
        match driver.unwrap_or("calico") {
            "calico" => Ok(Cni::Calico),
            "cilium" => Ok(Cni::Cilium),
            "flannel" => Ok(Cni::Flannel),
            other => Err(RenderError::InvalidLabel {
                label: "network_driver",
                value: other.to_owned(),
                reason: "the capi driver supports calico, cilium and flannel",
            }),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Cni::Calico => "calico",
            Cni::Cilium => "cilium",
            Cni::Flannel => "flannel",
        }
    }

    /// The label holding the pod network of this CNI, as upstream's drivers name it.
    fn pod_cidr_label(self) -> &'static str {
        match self {
            Cni::Calico => "calico_ipv4pool",
            Cni::Cilium => "cilium_ipv4pool",
            Cni::Flannel => "flannel_network_cidr",
        }
    }
}

fn boolean_label(
    labels: &magnum_domain::labels::Labels,
    name: &'static str,
    default: bool,
) -> Result<bool, RenderError> {
    match labels.get(name) {
        None => Ok(default),
        Some(value) => match value.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" => Ok(false),
            _ => Err(RenderError::InvalidLabel {
                label: name,
                value: value.to_owned(),
                reason: "expected true or false",
            }),
        },
    }
}

/// An IPv4 or IPv6 network in CIDR notation.
fn cidr_label(
    labels: &magnum_domain::labels::Labels,
    name: &'static str,
    default: &str,
) -> Result<String, RenderError> {
    let value = labels.get(name).unwrap_or(default);
    let invalid = || RenderError::InvalidLabel {
        label: name,
        value: value.to_owned(),
        reason: "expected a network in CIDR notation, such as 10.100.0.0/16",
    };
    let (address, prefix) = value.split_once('/').ok_or_else(invalid)?;
    let address: IpAddr = address.parse().map_err(|_| invalid())?;
    let prefix: u8 = prefix.parse().map_err(|_| invalid())?;
    let longest = if address.is_ipv4() { 32 } else { 128 };
    if prefix > longest {
        return Err(invalid());
    }
    Ok(value.to_owned())
}

/// `v1.33.5`: what kubeadm and CAPI accept as a version (a leading `v` is added if missing).
pub fn kubernetes_version(
    labels: &magnum_domain::labels::Labels,
    settings: &Settings,
) -> Result<String, RenderError> {
    let Some(value) = labels.get("kube_tag") else {
        return Ok(settings.default_kubernetes_version.clone());
    };
    let version = value.strip_prefix('v').unwrap_or(value);
    let parts: Vec<&str> = version.split('.').collect();
    let numeric = |part: &&str| {
        !part.is_empty() && part.len() <= 4 && part.bytes().all(|b| b.is_ascii_digit())
    };
    if parts.len() != 3 || !parts.iter().all(numeric) {
        return Err(RenderError::InvalidLabel {
            label: "kube_tag",
            value: value.to_owned(),
            reason: "expected a Kubernetes version such as v1.33.5",
        });
    }
    Ok(format!("v{version}"))
}

fn dns_domain(labels: &magnum_domain::labels::Labels) -> Result<String, RenderError> {
    let value = labels
        .get("dns_cluster_domain")
        .unwrap_or(DEFAULT_SERVICE_DOMAIN);
    let valid = value.len() <= 253 && value.split('.').all(names::is_dns_label);
    if !valid {
        return Err(RenderError::InvalidLabel {
            label: "dns_cluster_domain",
            value: value.to_owned(),
            reason: "expected a DNS domain such as cluster.local",
        });
    }
    Ok(value.to_owned())
}

fn root_volume(labels: &magnum_domain::labels::Labels) -> Result<Value, RenderError> {
    let size = match labels.get("boot_volume_size") {
        None => 0,
        Some(value) => value
            .parse::<u32>()
            .ok()
            .filter(|size| *size <= 65_536)
            .ok_or_else(|| RenderError::InvalidLabel {
                label: "boot_volume_size",
                value: value.to_owned(),
                reason: "expected a size in GiB from 0 to 65536",
            })?,
    };
    let mut volume = json!({"sizeGiB": size});
    if let Some(kind) = labels
        .get("boot_volume_type")
        .filter(|kind| !kind.is_empty())
    {
        volume["type"] = json!(kind);
    }
    Ok(volume)
}

/// Availability zones as a list label: `az1,az2`.
fn zones(
    labels: &magnum_domain::labels::Labels,
    name: &'static str,
) -> Result<Vec<String>, RenderError> {
    let Some(value) = labels.get(name) else {
        return Ok(Vec::new());
    };
    let zones: Vec<String> = value
        .split(',')
        .map(str::trim)
        .filter(|zone| !zone.is_empty())
        .map(str::to_owned)
        .collect();
    if zones.len() > 16 || zones.iter().any(|zone| zone.len() > 255) {
        return Err(RenderError::InvalidLabel {
            label: name,
            value: value.to_owned(),
            reason: "expected at most 16 availability zones, separated by commas",
        });
    }
    Ok(zones)
}

fn resolved<'a>(
    map: &'a HashMap<String, String>,
    reference: &str,
    what: &'static str,
) -> Result<&'a str, RenderError> {
    map.get(reference)
        .map(String::as_str)
        .ok_or_else(|| RenderError::Unresolved {
            what,
            reference: reference.to_owned(),
        })
}

fn named_value(name: &str, value: Value) -> Value {
    json!({"name": name, "value": value})
}

/// The labels every object of a cluster carries.
pub fn cluster_labels(cluster: &Cluster) -> Map<String, Value> {
    let mut labels = Map::new();
    labels.insert(label::CLUSTER_UUID.into(), json!(cluster.uuid.to_string()));
    labels.insert(
        label::PROJECT_ID.into(),
        json!(sanitized_label_value(&cluster.project_id)),
    );
    labels.insert(label::MANAGED_BY.into(), json!(label::MANAGED_BY_VALUE));
    labels
}

/// Keystone project ids are 32 hex digits, but some clouds use other ids: kept only when they
/// are a valid label value, so that a label never makes the apply fail.
fn sanitized_label_value(value: &str) -> String {
    let valid = value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && value
            .bytes()
            .next()
            .is_none_or(|b| b.is_ascii_alphanumeric())
        && value
            .bytes()
            .last()
            .is_none_or(|b| b.is_ascii_alphanumeric());
    if valid {
        value.to_owned()
    } else {
        String::new()
    }
}

/// Nodegroups that still have machines to run: every one but those being deleted.
fn live_worker_groups(nodegroups: &[NodeGroup]) -> impl Iterator<Item = &NodeGroup> {
    nodegroups
        .iter()
        .filter(|group| !group.is_master() && group.status != ClusterStatus::DeleteInProgress)
}

/// The CAPI `Cluster` with its topology.
pub fn render_cluster(settings: &Settings, input: ClusterInput<'_>) -> Result<Value, RenderError> {
    let ClusterInput {
        cluster,
        template,
        nodegroups,
        resolved: lookups,
        rollout_after,
    } = input;
    let labels = &cluster.labels;
    let cni = Cni::from_network_driver(template.network_driver.as_deref())?;
    let version = kubernetes_version(labels, settings)?;
    let auto_healing = boolean_label(labels, "auto_healing_enabled", true)?;
    let auto_scaling = boolean_label(labels, "auto_scaling_enabled", false)?;
    let pod_cidr = cidr_label(labels, cni.pod_cidr_label(), DEFAULT_POD_CIDR)?;
    let service_cidr = cidr_label(labels, "service_cluster_ip_range", DEFAULT_SERVICE_CIDR)?;
    let node_cidr = cidr_label(labels, "fixed_subnet_cidr", DEFAULT_NODE_CIDR)?;
    let operating_system = if lookups.os_distro.starts_with("flatcar") {
        "flatcar"
    } else {
        "ubuntu"
    };

    let master_flavor = cluster
        .master_flavor_id
        .as_deref()
        .or(template.master_flavor_id.as_deref())
        .or(cluster.flavor_id.as_deref())
        .ok_or(RenderError::Missing("master flavor"))?;
    let worker_flavor = cluster
        .flavor_id
        .as_deref()
        .or(template.flavor_id.as_deref())
        .ok_or(RenderError::Missing("flavor"))?;
    let image = resolved(&lookups.images, &template.image_id, "image")?;

    let id_of = |id: &Option<String>| json!({"id": id.clone().unwrap_or_default()});
    let subnets: Vec<Value> = lookups
        .fixed_subnet_id
        .iter()
        .map(|id| json!({"id": id}))
        .collect();
    // Without a network of the tenant's own, CAPO makes one with this subnet.
    let managed_subnets: Vec<Value> =
        if lookups.fixed_network_id.is_none() && lookups.fixed_subnet_id.is_none() {
            let mut subnet = json!({"cidr": node_cidr});
            let nameservers: Vec<&str> = template
                .dns_nameserver
                .as_deref()
                .map(|servers| {
                    servers
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default();
            if !nameservers.is_empty() {
                subnet["dnsNameservers"] = json!(nameservers);
            }
            vec![subnet]
        } else {
            Vec::new()
        };
    let keypair = cluster
        .keypair
        .clone()
        .or_else(|| template.keypair_id.clone())
        .unwrap_or_default();
    let variables = vec![
        named_value(
            variable::IDENTITY_REF_NAME,
            json!(names::cloud_config_secret(&names::cluster_name(
                cluster.uuid
            ))),
        ),
        named_value(variable::IMAGE_UUID, json!(image)),
        named_value(
            variable::CONTROL_PLANE_FLAVOR,
            json!(resolved(&lookups.flavors, master_flavor, "master flavor")?),
        ),
        named_value(
            variable::FLAVOR,
            json!(resolved(&lookups.flavors, worker_flavor, "flavor")?),
        ),
        named_value(
            variable::EXTERNAL_NETWORK,
            id_of(&lookups.external_network_id),
        ),
        named_value(variable::NETWORK, id_of(&lookups.fixed_network_id)),
        named_value(variable::SUBNETS, json!(subnets)),
        named_value(variable::MANAGED_SUBNETS, json!(managed_subnets)),
        named_value(
            variable::API_SERVER_LOAD_BALANCER,
            json!(cluster.master_lb_enabled),
        ),
        // Magnum's floating_ip_enabled is about the nodes; the API's own floating IP is
        // master_lb_floating_ip_enabled, which defaults to it.
        named_value(
            variable::DISABLE_API_SERVER_FLOATING_IP,
            json!(!boolean_label(
                labels,
                "master_lb_floating_ip_enabled",
                cluster.floating_ip_enabled
            )?),
        ),
        named_value(
            variable::CONTROL_PLANE_AVAILABILITY_ZONES,
            json!(zones(labels, "control_plane_availability_zones")?),
        ),
        named_value(variable::SSH_KEY_NAME, json!(keypair)),
        named_value(variable::ROOT_VOLUME, root_volume(labels)?),
        named_value(variable::OPERATING_SYSTEM, json!(operating_system)),
        named_value(
            variable::API_SERVER_PORT,
            json!(template.apiserver_port.unwrap_or(0)),
        ),
    ];

    let masters: i64 = nodegroups
        .iter()
        .filter(|group| group.is_master())
        .map(|group| group.node_count)
        .sum();
    // etcd stacked on the control plane needs a majority: KubeadmControlPlane refuses even
    // counts.
    if masters < 1 || masters % 2 == 0 {
        return Err(RenderError::EvenControlPlane(masters));
    }
    let mut control_plane = json!({
        "replicas": masters,
        "healthCheck": {"enabled": auto_healing},
    });
    if let Some(after) = rollout_after {
        control_plane["rollout"] = json!({"after": after});
    }

    let mut deployments = Vec::new();
    let mut seen: HashMap<String, &str> = HashMap::new();
    for group in live_worker_groups(nodegroups) {
        let name = names::machine_deployment_name(&group.name, group.uuid);
        if let Some(first) = seen.insert(name.clone(), &group.name) {
            return Err(RenderError::NodegroupNameClash {
                first: first.to_owned(),
                second: group.name.clone(),
                name,
            });
        }
        deployments.push(machine_deployment(
            group,
            &name,
            MachineDeploymentInput {
                cluster_labels: labels,
                lookups,
                default_flavor: worker_flavor,
                image_reference: group.image_id.as_deref().unwrap_or(&template.image_id),
                auto_healing,
                auto_scaling,
                rollout_after,
            },
        )?);
    }

    let mut metadata_labels = cluster_labels(cluster);
    metadata_labels.insert(label::CNI.into(), json!(cni.name()));
    metadata_labels.insert(label::CLOUD_PROVIDER.into(), json!("openstack"));
    metadata_labels.insert(label::CLASS.into(), json!(settings.class_name()));
    if template.volume_driver.as_deref() == Some("cinder") {
        metadata_labels.insert(label::CSI.into(), json!("cinder"));
    }
    let mut cluster_network = json!({
        "pods": {"cidrBlocks": [pod_cidr]},
        "services": {"cidrBlocks": [service_cidr]},
        "serviceDomain": dns_domain(labels)?,
    });
    if let Some(port) = template.apiserver_port {
        cluster_network["apiServerPort"] = json!(port);
    }
    Ok(json!({
        "apiVersion": CAPI_GROUP_VERSION,
        "kind": "Cluster",
        "metadata": {
            "name": names::cluster_name(cluster.uuid),
            "namespace": settings.namespace,
            "labels": metadata_labels,
        },
        "spec": {
            "clusterNetwork": cluster_network,
            "topology": {
                "classRef": {"name": settings.class_name()},
                "version": version,
                "controlPlane": control_plane,
                "workers": {"machineDeployments": deployments},
                "variables": variables,
            },
        },
    }))
}

struct MachineDeploymentInput<'a> {
    cluster_labels: &'a magnum_domain::labels::Labels,
    lookups: &'a Resolved,
    default_flavor: &'a str,
    image_reference: &'a str,
    auto_healing: bool,
    auto_scaling: bool,
    rollout_after: Option<&'a str>,
}

fn machine_deployment(
    group: &NodeGroup,
    name: &str,
    input: MachineDeploymentInput<'_>,
) -> Result<Value, RenderError> {
    let flavor = group.flavor_id.as_deref().unwrap_or(input.default_flavor);
    let image = resolved(&input.lookups.images, input.image_reference, "image")?;
    let mut overrides = vec![
        named_value(
            variable::FLAVOR,
            json!(resolved(&input.lookups.flavors, flavor, "flavor")?),
        ),
        named_value(variable::IMAGE_UUID, json!(image)),
    ];
    if group.labels.get("boot_volume_size").is_some() {
        overrides.push(named_value(
            variable::ROOT_VOLUME,
            root_volume(&group.labels)?,
        ));
    }
    let mut deployment = json!({
        "class": WORKER_CLASS,
        "name": name,
        "metadata": {"labels": {label::NODEGROUP: name, label::NODEGROUP_UUID: group.uuid.to_string()}},
        "healthCheck": {"enabled": input.auto_healing},
        "variables": {"overrides": overrides},
    });
    let zone = group
        .labels
        .get("availability_zone")
        .or(input.cluster_labels.get("availability_zone"))
        .filter(|zone| !zone.is_empty());
    if let Some(zone) = zone {
        deployment["failureDomain"] = json!(zone);
    }
    if input.auto_scaling {
        // The cluster autoscaler owns the replica count: it is never applied, so the
        // autoscaler's own writes are not undone by the next apply.
        let maximum = group
            .autoscaling_maximum()
            .unwrap_or(group.node_count.max(group.min_node_count));
        deployment["metadata"]["annotations"] = json!({
            label::AUTOSCALER_MIN: group.min_node_count.to_string(),
            label::AUTOSCALER_MAX: maximum.to_string(),
        });
    } else {
        deployment["replicas"] = json!(group.node_count);
    }
    if let Some(after) = input.rollout_after {
        deployment["rollout"] = json!({"after": after});
    }
    Ok(deployment)
}

/// A CA key pair in PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPair {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

fn encode(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// Sets the rollout time of the control plane and every MachineDeployment of a rendered
/// Cluster: CAPI replaces every machine created before it.
pub fn set_rollout_after(cluster: &mut Value, after: &str) {
    let topology = &mut cluster["spec"]["topology"];
    topology["controlPlane"]["rollout"] = json!({"after": after});
    let deployments = topology
        .get_mut("workers")
        .and_then(|workers| workers.get_mut("machineDeployments"))
        .and_then(Value::as_array_mut);
    if let Some(deployments) = deployments {
        for deployment in deployments {
            deployment["rollout"] = json!({"after": after});
        }
    }
}

/// The CA secrets of a cluster, as KubeadmControlPlane reads them instead of making its own:
/// Magnum's cluster CA stays the Kubernetes CA, so `coe cluster config` and
/// `POST /v1/certificates` sign with the CA the API server trusts.
pub fn render_ca_secret(
    settings: &Settings,
    cluster: &Cluster,
    purpose: CaPurpose,
    pair: &KeyPair,
) -> Value {
    let name = names::cluster_name(cluster.uuid);
    let mut labels = cluster_labels(cluster);
    labels.insert(label::CAPI_CLUSTER_NAME.into(), json!(name));
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "cluster.x-k8s.io/secret",
        "metadata": {
            "name": names::ca_secret(&name, purpose),
            "namespace": settings.namespace,
            "labels": labels,
        },
        "data": {"tls.crt": encode(&pair.cert_pem), "tls.key": encode(&pair.key_pem)},
    })
}

/// CAPI's `<name>-kubeconfig` secret as CAPI writes it (key `value`, an admin kubeconfig),
/// with `bundle_pem` as the trusted CAs.
pub fn render_kubeconfig_secret(
    settings: &Settings,
    cluster_name: &str,
    server: &str,
    bundle_pem: &str,
    client_cert_pem: &str,
    client_key_pem: &str,
) -> Value {
    let user = format!("{cluster_name}-admin");
    let context = format!("{user}@{cluster_name}");
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {cluster_name}\n  cluster:\n    server: {}\n    certificate-authority-data: {}\ncontexts:\n- name: {context}\n  context:\n    cluster: {cluster_name}\n    user: {user}\ncurrent-context: {context}\nusers:\n- name: {user}\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
        yaml_quoted(server),
        encode(bundle_pem),
        encode(client_cert_pem),
        encode(client_key_pem),
    );
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "cluster.x-k8s.io/secret",
        "metadata": {
            "name": names::kubeconfig_secret(cluster_name),
            "namespace": settings.namespace,
            "labels": {label::CAPI_CLUSTER_NAME: cluster_name},
        },
        "data": {"value": encode(&kubeconfig)},
    })
}

/// A Keystone application credential made for one cluster.
#[derive(Clone, PartialEq, Eq)]
pub struct ApplicationCredential {
    pub id: String,
    pub secret: String,
}

impl std::fmt::Debug for ApplicationCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApplicationCredential")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// A YAML double-quoted scalar: safe for any text.
fn yaml_quoted(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_owned())
}

/// The `clouds.yaml` CAPO reads (cloud name `openstack`, as the class's identityRef says).
pub fn clouds_yaml(settings: &Settings, credential: &ApplicationCredential) -> String {
    let mut text = format!(
        "clouds:\n  openstack:\n    auth_type: v3applicationcredential\n    auth:\n      auth_url: {}\n      application_credential_id: {}\n      application_credential_secret: {}\n    interface: {}\n    identity_api_version: 3\n",
        yaml_quoted(&settings.cloud.auth_url),
        yaml_quoted(&credential.id),
        yaml_quoted(&credential.secret),
        yaml_quoted(&settings.cloud.interface),
    );
    if let Some(region) = &settings.cloud.region_name {
        text.push_str(&format!("    region_name: {}\n", yaml_quoted(region)));
    }
    if settings.cloud.ca_bundle.is_some() {
        text.push_str("    cacert: /etc/openstack/cacert\n");
    }
    text
}

/// The `cloud.conf` the OpenStack cloud controller manager and Cinder CSI read inside the
/// workload cluster (INI; values quoted as gcfg wants).
pub fn cloud_conf(settings: &Settings, credential: &ApplicationCredential) -> String {
    let quoted = |text: &str| {
        // gcfg's escapes; other control characters have no business in these values.
        let mut quoted = String::from('"');
        for character in text.chars() {
            match character {
                '\\' => quoted.push_str("\\\\"),
                '"' => quoted.push_str("\\\""),
                '\n' => quoted.push_str("\\n"),
                '\t' => quoted.push_str("\\t"),
                other if other.is_control() => {}
                other => quoted.push(other),
            }
        }
        quoted.push('"');
        quoted
    };
    let mut text = format!(
        "[Global]\nauth-url={}\napplication-credential-id={}\napplication-credential-secret={}\nos-endpoint-type={}\n",
        quoted(&settings.cloud.auth_url),
        quoted(&credential.id),
        quoted(&credential.secret),
        quoted(&settings.cloud.interface),
    );
    if let Some(region) = &settings.cloud.region_name {
        text.push_str(&format!("region={}\n", quoted(region)));
    }
    if settings.cloud.ca_bundle.is_some() {
        text.push_str("ca-file=/etc/config/ca.crt\n");
    }
    text.push_str("\n[LoadBalancer]\nenabled=true\n");
    text
}

/// The credentials of a cluster: the secret CAPO reads (`<name>-cloud-config`), and a
/// ClusterResourceSet that puts `cloud-config` into the workload cluster's kube-system for
/// the cloud controller manager and the Cinder CSI driver.
pub fn render_cloud_credentials(
    settings: &Settings,
    cluster: &Cluster,
    credential: &ApplicationCredential,
) -> Vec<Value> {
    let name = names::cluster_name(cluster.uuid);
    let mut labels = cluster_labels(cluster);
    labels.insert(label::CAPI_CLUSTER_NAME.into(), json!(name));
    let mut capo_data = json!({"clouds.yaml": encode(&clouds_yaml(settings, credential))});
    let mut workload_data = json!({"cloud.conf": encode(&cloud_conf(settings, credential))});
    if let Some(bundle) = &settings.cloud.ca_bundle {
        capo_data["cacert"] = json!(encode(bundle));
        workload_data["ca.crt"] = json!(encode(bundle));
    }
    let capo_secret = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": names::cloud_config_secret(&name),
            "namespace": settings.namespace,
            "labels": labels,
        },
        "data": capo_data,
    });
    let workload_secret = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": "cloud-config", "namespace": "kube-system"},
        "data": workload_data,
    });
    let resource_set_name = names::cloud_config_resource_set(&name);
    let resources_secret = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "addons.cluster.x-k8s.io/resource-set",
        "metadata": {
            "name": resource_set_name,
            "namespace": settings.namespace,
            "labels": labels,
        },
        "data": {"cloud-config.json": encode(&workload_secret.to_string())},
    });
    let resource_set = json!({
        "apiVersion": ADDONS_GROUP_VERSION,
        "kind": "ClusterResourceSet",
        "metadata": {
            "name": resource_set_name,
            "namespace": settings.namespace,
            "labels": labels,
        },
        "spec": {
            "clusterSelector": {"matchLabels": {label::CLUSTER_UUID: cluster.uuid.to_string()}},
            // A rotated credential reaches the workload cluster too.
            "strategy": "Reconcile",
            "resources": [{"kind": "Secret", "name": resource_set_name}],
        },
    });
    vec![capo_secret, resources_secret, resource_set]
}

/// Variables that become OpenStackCluster fields CAPO's admission webhook refuses to change
/// once the cluster exists, with how to read each back from the live object.
const IMMUTABLE_ONCE_CREATED: [&str; 6] = [
    variable::EXTERNAL_NETWORK,
    variable::NETWORK,
    variable::SUBNETS,
    variable::MANAGED_SUBNETS,
    variable::API_SERVER_LOAD_BALANCER,
    variable::DISABLE_API_SERVER_FLOATING_IP,
];

/// The value a variable had when the live OpenStackCluster was made from it.
fn live_value(variable_name: &str, spec: &Value) -> Value {
    let id_of = |field: &Value| json!({"id": field["id"].as_str().unwrap_or_default()});
    let list_of = |field: &Value| {
        field
            .as_array()
            .cloned()
            .map(Value::Array)
            .unwrap_or(json!([]))
    };
    match variable_name {
        variable::EXTERNAL_NETWORK => id_of(&spec["externalNetwork"]),
        variable::NETWORK => id_of(&spec["network"]),
        variable::SUBNETS => Value::Array(
            spec["subnets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|subnet| subnet["id"].is_string())
                .map(id_of)
                .collect(),
        ),
        variable::MANAGED_SUBNETS => list_of(&spec["managedSubnets"]),
        variable::API_SERVER_LOAD_BALANCER => {
            json!(spec["apiServerLoadBalancer"]["enabled"]
                .as_bool()
                .unwrap_or(false))
        }
        _ => json!(spec["disableAPIServerFloatingIP"]
            .as_bool()
            .unwrap_or(false)),
    }
}

/// Keeps, in a rendered Cluster, the variables CAPO will not let change on the live
/// OpenStackCluster: a template or label change that would move them would otherwise make
/// every later update fail with the webhook's 422. Returns the names of the variables whose
/// new value was set aside.
pub fn keep_immutable(rendered: &mut Value, live_openstack_cluster: &Value) -> Vec<&'static str> {
    let spec = &live_openstack_cluster["spec"];
    let mut kept = Vec::new();
    let Some(variables) = rendered["spec"]["topology"]["variables"].as_array_mut() else {
        return kept;
    };
    for name in IMMUTABLE_ONCE_CREATED {
        let live = live_value(name, spec);
        if let Some(entry) = variables.iter_mut().find(|entry| entry["name"] == name) {
            if entry["value"] != live {
                entry["value"] = live;
                kept.push(name);
            }
        }
    }
    kept
}

/// Keeps the live Cluster's class (and the class label its addons select it by).
pub fn keep_class(rendered: &mut Value, live_cluster: &Value) {
    if let Some(class) = live_cluster["spec"]["topology"]["classRef"]["name"].as_str() {
        rendered["spec"]["topology"]["classRef"]["name"] = json!(class);
        rendered["metadata"]["labels"][label::CLASS] = json!(class);
    }
}

/// `v1.33.5` as numbers, for comparing versions.
fn version_numbers(version: &str) -> Option<(u32, u32, u32)> {
    let mut parts = version
        .trim_start_matches('v')
        .split('.')
        .map(|part| part.parse().ok());
    Some((parts.next()??, parts.next()??, parts.next()??))
}

/// Keeps the live topology version when the rendered one is older: CAPI refuses to lower a
/// cluster's version, and an upgrade rolled back after it was applied must not make every
/// later change fail.
pub fn keep_newer_version(rendered: &mut Value, live_cluster: &Value) {
    let live = live_cluster["spec"]["topology"]["version"]
        .as_str()
        .unwrap_or_default();
    let wanted = rendered["spec"]["topology"]["version"]
        .as_str()
        .unwrap_or_default();
    if let (Some(live_numbers), Some(wanted_numbers)) =
        (version_numbers(live), version_numbers(wanted))
    {
        if live_numbers > wanted_numbers {
            rendered["spec"]["topology"]["version"] = json!(live);
        }
    }
}
