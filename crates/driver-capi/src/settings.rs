//! What an operator configures for the driver (`[drivers.capi]`), already checked.

/// The version of the ClusterClass this build renders. A new version is a new class
/// (`magnum-rs-v<N>`) beside the old one: clusters move to it only on upgrade, so a magnumd
/// release never rolls every cluster's machines at once.
pub const CLASS_VERSION: u32 = 1;

/// Chart versions of the addons, pinned per class version: a cluster gets the addons its
/// class was tested with, whatever magnumd runs later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chart {
    pub repository: String,
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The management cluster namespace of every object the driver writes.
    pub namespace: String,
    /// The Kubernetes version of clusters whose template has no `kube_tag` label.
    pub default_kubernetes_version: String,
    /// Image OS distros the driver provides clusters for (`os_distro` of Glance images).
    pub os_distros: Vec<String>,
    /// What CAPO needs to reach the cloud, written into each cluster's `clouds.yaml`.
    pub cloud: CloudSettings,
    /// Where addon charts and images come from (clouds without internet access mirror them).
    pub addons: AddonSettings,
    /// Projects whose clusters the driver builds; empty: every project.
    pub allowed_projects: Vec<String>,
    /// How long Cluster API gets to tear a force-deleted cluster down before its objects are
    /// released from their finalizers.
    pub force_delete_grace: std::time::Duration,
    /// Whether a delete first removes the load balancers the cluster's cloud provider made.
    pub delete_load_balancers: bool,
    /// Whether `PATCH /v1/certificates/<cluster>` is served (CAPI.md: not yet run against a
    /// real management cluster).
    pub ca_rotation: bool,
    /// Whether each cluster acts with an application credential delegated in its owner's name
    /// (created by the API with the owner's token) rather than the shared one.
    pub delegated_credentials: bool,
    /// The roles of a delegated credential; empty: all of the owner's.
    pub credential_roles: Vec<String>,
    /// How often the health and live state of every cluster are pushed to the conductor
    /// again, changed or not (a conductor that fell behind lost events for good).
    pub resync_interval: std::time::Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudSettings {
    pub auth_url: String,
    pub region_name: Option<String>,
    /// `public`, `internal` or `admin`: the endpoints CAPO and the cloud provider use.
    pub interface: String,
    /// The cloud's CA bundle (PEM), for clouds whose endpoints a public CA did not sign.
    pub ca_bundle: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddonSettings {
    pub calico: Chart,
    pub cilium: Chart,
    pub flannel: Chart,
    pub cloud_controller_manager: Chart,
    pub cinder_csi: Chart,
    /// A registry that replaces the charts' default image registries, when set.
    pub image_registry: Option<String>,
}

impl Default for AddonSettings {
    fn default() -> Self {
        let chart = |repository: &str, name: &str, version: &str| Chart {
            repository: repository.to_owned(),
            name: name.to_owned(),
            version: version.to_owned(),
        };
        Self {
            calico: chart(
                "https://docs.tigera.io/calico/charts",
                "tigera-operator",
                "v3.30.3",
            ),
            cilium: chart("https://helm.cilium.io", "cilium", "1.18.2"),
            flannel: chart("https://flannel-io.github.io/flannel", "flannel", "v0.27.3"),
            cloud_controller_manager: chart(
                "https://kubernetes.github.io/cloud-provider-openstack",
                "openstack-cloud-controller-manager",
                "2.33.1",
            ),
            cinder_csi: chart(
                "https://kubernetes.github.io/cloud-provider-openstack",
                "openstack-cinder-csi",
                "2.33.1",
            ),
            image_registry: None,
        }
    }
}

impl Settings {
    /// The ClusterClass every cluster of this build is created with.
    pub fn class_name(&self) -> String {
        format!("magnum-rs-v{CLASS_VERSION}")
    }
}

impl Settings {
    /// The defaults for a cloud whose Keystone is at `auth_url`.
    pub fn for_cloud(auth_url: &str) -> Self {
        Self {
            namespace: "magnum-system".to_owned(),
            default_kubernetes_version: "v1.33.5".to_owned(),
            os_distros: vec!["ubuntu".to_owned()],
            cloud: CloudSettings {
                auth_url: auth_url.to_owned(),
                region_name: None,
                interface: "public".to_owned(),
                ca_bundle: None,
            },
            addons: AddonSettings::default(),
            allowed_projects: Vec::new(),
            force_delete_grace: std::time::Duration::from_secs(600),
            delete_load_balancers: true,
            ca_rotation: false,
            delegated_credentials: false,
            credential_roles: Vec::new(),
            resync_interval: std::time::Duration::from_secs(300),
        }
    }
}
