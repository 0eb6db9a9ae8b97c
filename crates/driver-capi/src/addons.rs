//! What makes a Kubernetes cluster on OpenStack usable, installed from the management
//! cluster (never by connecting to the workload cluster): a CNI, the OpenStack cloud
//! controller manager and the Cinder CSI driver, as Helm charts through the Cluster API addon
//! provider for Helm. One HelmChartProxy per addon and class version selects the clusters
//! that want it by label; chart versions are pinned per class version, so a magnumd upgrade
//! never changes the addons of running clusters.

use serde_json::{json, Value};

use crate::class::HELM_GROUP_VERSION;
use crate::names::label;
use crate::render::Cni;
use crate::settings::{Chart, Settings};

/// An addon a cluster may get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addon {
    Cni(Cni),
    CloudControllerManager,
    CinderCsi,
}

impl Addon {
    pub const ALL: [Addon; 5] = [
        Addon::Cni(Cni::Calico),
        Addon::Cni(Cni::Cilium),
        Addon::Cni(Cni::Flannel),
        Addon::CloudControllerManager,
        Addon::CinderCsi,
    ];

    fn short_name(self) -> &'static str {
        match self {
            Addon::Cni(cni) => cni.name(),
            Addon::CloudControllerManager => "openstack-ccm",
            Addon::CinderCsi => "cinder-csi",
        }
    }

    pub fn chart(self, settings: &Settings) -> &Chart {
        let addons = &settings.addons;
        match self {
            Addon::Cni(Cni::Calico) => &addons.calico,
            Addon::Cni(Cni::Cilium) => &addons.cilium,
            Addon::Cni(Cni::Flannel) => &addons.flannel,
            Addon::CloudControllerManager => &addons.cloud_controller_manager,
            Addon::CinderCsi => &addons.cinder_csi,
        }
    }

    /// The cluster label (and value) that selects this addon.
    fn selector(self) -> (&'static str, &'static str) {
        match self {
            Addon::Cni(cni) => (label::CNI, cni.name()),
            Addon::CloudControllerManager => (label::CLOUD_PROVIDER, "openstack"),
            Addon::CinderCsi => (label::CSI, "cinder"),
        }
    }

    /// Helm values, a template CAAPH fills in per cluster (`.Cluster` is the CAPI Cluster).
    fn values(self, settings: &Settings) -> String {
        let registry = settings.addons.image_registry.as_deref();
        let mut values = match self {
            Addon::Cni(Cni::Calico) => "installation:\n  cni:\n    type: Calico\n  calicoNetwork:\n    bgp: Disabled\n    ipPools:\n    - cidr: '{{ index .Cluster.spec.clusterNetwork.pods.cidrBlocks 0 }}'\n      encapsulation: VXLAN\n".to_owned(),
            Addon::Cni(Cni::Cilium) => "ipam:\n  mode: kubernetes\nk8sServiceHost: '{{ .Cluster.spec.controlPlaneEndpoint.host }}'\nk8sServicePort: '{{ .Cluster.spec.controlPlaneEndpoint.port }}'\n".to_owned(),
            Addon::Cni(Cni::Flannel) => "podCidr: '{{ index .Cluster.spec.clusterNetwork.pods.cidrBlocks 0 }}'\n".to_owned(),
            // The `cloud-config` secret comes from the cluster's ClusterResourceSet.
            Addon::CloudControllerManager => "secret:\n  enabled: true\n  create: false\n  name: cloud-config\ncluster:\n  name: '{{ .Cluster.metadata.name }}'\nnodeSelector:\n  node-role.kubernetes.io/control-plane: \"\"\n".to_owned(),
            Addon::CinderCsi => "secret:\n  enabled: true\n  create: false\n  name: cloud-config\nclusterID: '{{ .Cluster.metadata.name }}'\nstorageClass:\n  enabled: true\n  delete:\n    isDefault: true\n".to_owned(),
        };
        if let Some(registry) = registry {
            let registry = registry.trim_end_matches('/');
            let line = match self {
                Addon::Cni(Cni::Calico) => format!("  registry: '{registry}'\n"),
                Addon::Cni(Cni::Cilium) => format!("image:\n  repository: '{registry}/cilium/cilium'\n  useDigest: false\n"),
                Addon::Cni(Cni::Flannel) => format!("flannel:\n  image:\n    repository: '{registry}/flannel/flannel'\n"),
                Addon::CloudControllerManager => format!("image:\n  repository: '{registry}/provider-os/openstack-cloud-controller-manager'\n"),
                Addon::CinderCsi => format!("csi:\n  plugin:\n    image:\n      repository: '{registry}/provider-os/cinder-csi-plugin'\n"),
            };
            if self == Addon::Cni(Cni::Calico) {
                // Inside `installation:`, which the calico values open first.
                values = values.replacen("installation:\n", &format!("installation:\n{line}"), 1);
            } else {
                values.push_str(&line);
            }
        }
        values
    }

    /// The namespace of the workload cluster the chart goes into.
    fn target_namespace(self) -> &'static str {
        match self {
            Addon::Cni(Cni::Calico) => "tigera-operator",
            _ => "kube-system",
        }
    }
}

/// The addons a cluster with these labels gets (what its completion waits for).
pub fn addons_of(cni: Cni, cinder: bool) -> Vec<Addon> {
    let mut addons = vec![Addon::Cni(cni), Addon::CloudControllerManager];
    if cinder {
        addons.push(Addon::CinderCsi);
    }
    addons
}

/// The HelmChartProxy of `addon` for this class version.
pub fn chart_proxy(settings: &Settings, addon: Addon) -> Value {
    let chart = addon.chart(settings);
    let class = settings.class_name();
    let (key, value) = addon.selector();
    json!({
        "apiVersion": HELM_GROUP_VERSION,
        "kind": "HelmChartProxy",
        "metadata": {
            "name": format!("{class}-{}", addon.short_name()),
            "namespace": settings.namespace,
            "labels": {label::MANAGED_BY: label::MANAGED_BY_VALUE},
        },
        "spec": {
            "clusterSelector": {"matchLabels": {key: value, label::CLASS: class}},
            "repoURL": chart.repository,
            "chartName": chart.name,
            "version": chart.version,
            "namespace": addon.target_namespace(),
            "releaseName": addon.short_name(),
            "valuesTemplate": addon.values(settings),
            "options": {
                "wait": true,
                "timeout": "10m0s",
                "install": {"createNamespace": true},
            },
        },
    })
}

/// Every addon proxy of the class version.
pub fn chart_proxies(settings: &Settings) -> Vec<Value> {
    Addon::ALL
        .into_iter()
        .map(|addon| chart_proxy(settings, addon))
        .collect()
}
