//! The names and labels of what the driver writes on the management cluster.
//!
//! Every name derives from the Magnum cluster's uuid and nodegroup names alone, so that a
//! converge run again after a crash writes the very same objects instead of new ones.

use uuid::Uuid;

/// Labels and annotations the driver sets, and those of CAPI it reads.
pub mod label {
    /// On every object of a cluster: the Magnum cluster it belongs to.
    pub const CLUSTER_UUID: &str = "magnum.openstack.org/cluster-uuid";
    pub const PROJECT_ID: &str = "magnum.openstack.org/project-id";
    /// On each MachineDeployment: the Magnum nodegroup it builds.
    pub const NODEGROUP_UUID: &str = "magnum.openstack.org/nodegroup-uuid";
    /// On every object the driver applies: found again by it, ignored by everyone else.
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    pub const MANAGED_BY_VALUE: &str = "magnum-rs";
    /// Which addons a cluster gets: the HelmChartProxies select clusters by these.
    pub const CNI: &str = "magnum-rs.openstack.org/cni";
    pub const CLOUD_PROVIDER: &str = "magnum-rs.openstack.org/cloud-provider";
    pub const CSI: &str = "magnum-rs.openstack.org/csi";
    /// The ClusterClass of a cluster: its addons are those pinned for that class version.
    pub const CLASS: &str = "magnum-rs.openstack.org/class";
    /// Set by CAPI on everything of a cluster.
    pub const CAPI_CLUSTER_NAME: &str = "cluster.x-k8s.io/cluster-name";
    /// Set by the topology controller on a MachineDeployment and its Machines.
    pub const CAPI_DEPLOYMENT_NAME: &str = "topology.cluster.x-k8s.io/deployment-name";
    /// Set by CAPI on control plane Machines.
    pub const CAPI_CONTROL_PLANE: &str = "cluster.x-k8s.io/control-plane";
    /// Synced by CAPI from Machines to Nodes: the Magnum nodegroup of a node.
    pub const NODEGROUP: &str = "node.cluster.x-k8s.io/magnum-nodegroup";
    /// The Machine CAPI deletes first when its MachineDeployment shrinks.
    pub const DELETE_MACHINE: &str = "cluster.x-k8s.io/delete-machine";
    pub const AUTOSCALER_MIN: &str = "cluster.x-k8s.io/cluster-api-autoscaler-node-group-min-size";
    pub const AUTOSCALER_MAX: &str = "cluster.x-k8s.io/cluster-api-autoscaler-node-group-max-size";
}

/// The name of the CAPI `Cluster` (Magnum's `stack_id`): `kube-` and 16 hex digits of the
/// uuid. 64 bits keep two clusters of one namespace apart (a collision among a million
/// clusters has odds of about 3·10⁻⁸), and the name leaves room for every suffix CAPI adds
/// within Kubernetes' 63-character label limit.
pub fn cluster_name(cluster: Uuid) -> String {
    let simple = cluster.simple().to_string();
    format!("kube-{}", &simple[..16])
}

/// The CA secrets CAPI's KubeadmControlPlane uses instead of generating its own.
pub fn ca_secret(cluster_name: &str, purpose: CaPurpose) -> String {
    format!("{cluster_name}-{}", purpose.suffix())
}

/// The secret holding the cluster's `clouds.yaml` (its application credential), read by CAPO.
pub fn cloud_config_secret(cluster_name: &str) -> String {
    format!("{cluster_name}-cloud-config")
}

/// The ClusterResourceSet (and its secret) carrying the cloud config into the workload cluster
/// for the cloud controller manager and the Cinder CSI driver.
pub fn cloud_config_resource_set(cluster_name: &str) -> String {
    format!("{cluster_name}-cloud-provider")
}

/// The kubeconfig secret CAPI writes for a cluster (key `value`).
pub fn kubeconfig_secret(cluster_name: &str) -> String {
    format!("{cluster_name}-kubeconfig")
}

/// The four certificate authorities of a kubeadm cluster, named as CAPI names their secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaPurpose {
    /// The cluster CA: API server serving and client certificates; Magnum's cluster CA.
    Cluster,
    Etcd,
    FrontProxy,
    /// The service-account signing key pair.
    ServiceAccount,
}

impl CaPurpose {
    pub const ALL: [CaPurpose; 4] = [
        CaPurpose::Cluster,
        CaPurpose::Etcd,
        CaPurpose::FrontProxy,
        CaPurpose::ServiceAccount,
    ];

    pub fn suffix(self) -> &'static str {
        match self {
            CaPurpose::Cluster => "ca",
            CaPurpose::Etcd => "etcd",
            CaPurpose::FrontProxy => "proxy",
            CaPurpose::ServiceAccount => "sa",
        }
    }
}

/// The MachineDeployment topology name of a nodegroup. Magnum nodegroup names are free text
/// up to 255 characters; Kubernetes wants a DNS label of at most 63. A name that already is
/// one is kept (what an operator reads in `kubectl`); any other becomes its valid part and 8
/// hex digits of the nodegroup uuid, which keep two such names apart.
pub fn machine_deployment_name(nodegroup_name: &str, nodegroup: Uuid) -> String {
    if is_dns_label(nodegroup_name) {
        return nodegroup_name.to_owned();
    }
    let mut cleaned = String::new();
    for character in nodegroup_name.chars() {
        let character = character.to_ascii_lowercase();
        if character.is_ascii_lowercase() || character.is_ascii_digit() {
            cleaned.push(character);
        } else if !cleaned.is_empty() && !cleaned.ends_with('-') {
            cleaned.push('-');
        }
    }
    cleaned.truncate(40);
    let cleaned = cleaned.trim_matches('-');
    let suffix = &nodegroup.simple().to_string()[..8];
    if cleaned.is_empty() {
        format!("ng-{suffix}")
    } else {
        format!("{cleaned}-{suffix}")
    }
}

/// RFC 1123 label: lower-case alphanumerics and '-', starting and ending alphanumeric, ≤ 63.
pub fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || *byte == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names_are_stable_short_labels() {
        let uuid = Uuid::parse_str("5d12f6fd-a196-4bf0-ae4c-1f639a523a52").unwrap();
        assert_eq!(cluster_name(uuid), "kube-5d12f6fda1964bf0");
        assert_eq!(cluster_name(uuid), cluster_name(uuid));
        assert!(is_dns_label(&cluster_name(uuid)));
        assert_eq!(
            ca_secret(&cluster_name(uuid), CaPurpose::FrontProxy),
            "kube-5d12f6fda1964bf0-proxy"
        );
    }

    #[test]
    fn nodegroup_names_become_valid_distinct_labels() {
        let first = Uuid::parse_str("aaaaaaaa-0000-4000-8000-000000000001").unwrap();
        let second = Uuid::parse_str("bbbbbbbb-0000-4000-8000-000000000002").unwrap();
        assert_eq!(
            machine_deployment_name("default-worker", first),
            "default-worker"
        );
        assert_eq!(
            machine_deployment_name("GPU nodes", first),
            "gpu-nodes-aaaaaaaa"
        );
        assert_eq!(
            machine_deployment_name("gpu_nodes", first),
            "gpu-nodes-aaaaaaaa"
        );
        assert_ne!(
            machine_deployment_name("GPU nodes", first),
            machine_deployment_name("GPU nodes", second)
        );
        assert_eq!(machine_deployment_name("日本", first), "ng-aaaaaaaa");
        assert_eq!(machine_deployment_name("-x-", first), "x-aaaaaaaa");
        let long = "a".repeat(200);
        let named = machine_deployment_name(&long, first);
        assert!(is_dns_label(&named), "{named}");
        for name in ["", "-", "A", "a_b", "a.b", &"b".repeat(64)] {
            assert!(
                is_dns_label(&machine_deployment_name(name, first)),
                "{name}"
            );
        }
    }
}
