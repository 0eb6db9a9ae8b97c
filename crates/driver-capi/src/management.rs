//! The conversation with the management cluster: one shared kube client for the process,
//! server-side apply under one field manager, and errors sorted into what a retry can fix
//! and what it cannot.

use std::path::Path;

use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::Value;

/// The one field manager of every apply: a field the driver stops sending is released.
pub const FIELD_MANAGER: &str = "magnum-rs";

/// The kinds the driver reads or writes, with where they are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Secret,
    Cluster,
    ClusterClass,
    MachineDeployment,
    Machine,
    KubeadmControlPlane,
    KubeadmControlPlaneTemplate,
    KubeadmConfigTemplate,
    OpenStackCluster,
    OpenStackClusterTemplate,
    OpenStackMachineTemplate,
    ClusterResourceSet,
    HelmChartProxy,
    HelmReleaseProxy,
    MachineSet,
    KubeadmConfig,
    OpenStackMachine,
}

impl Kind {
    pub const ALL: [Kind; 17] = [
        Kind::Secret,
        Kind::Cluster,
        Kind::ClusterClass,
        Kind::MachineDeployment,
        Kind::Machine,
        Kind::KubeadmControlPlane,
        Kind::KubeadmControlPlaneTemplate,
        Kind::KubeadmConfigTemplate,
        Kind::OpenStackCluster,
        Kind::OpenStackClusterTemplate,
        Kind::OpenStackMachineTemplate,
        Kind::ClusterResourceSet,
        Kind::HelmChartProxy,
        Kind::HelmReleaseProxy,
        Kind::MachineSet,
        Kind::KubeadmConfig,
        Kind::OpenStackMachine,
    ];

    /// Whether the driver cannot work without the management cluster serving it (bootstrap
    /// configs are only ever released from finalizers, and a missing kind has none).
    pub fn is_required(self) -> bool {
        self != Kind::KubeadmConfig
    }

    /// What Cluster API makes for one cluster (all labelled with its name), which a forced
    /// delete may have to release from their finalizers.
    /// The Cluster comes last: while it is there, an interrupted release is found again.
    pub const OF_A_CLUSTER: [Kind; 9] = [
        Kind::KubeadmControlPlane,
        Kind::MachineDeployment,
        Kind::MachineSet,
        Kind::Machine,
        Kind::KubeadmConfig,
        Kind::OpenStackMachine,
        Kind::OpenStackCluster,
        Kind::HelmReleaseProxy,
        Kind::Cluster,
    ];

    /// (group, version, kind, plural)
    pub fn coordinates(self) -> (&'static str, &'static str, &'static str, &'static str) {
        match self {
            Kind::Secret => ("", "v1", "Secret", "secrets"),
            Kind::Cluster => ("cluster.x-k8s.io", "v1beta2", "Cluster", "clusters"),
            Kind::ClusterClass => (
                "cluster.x-k8s.io",
                "v1beta2",
                "ClusterClass",
                "clusterclasses",
            ),
            Kind::MachineDeployment => (
                "cluster.x-k8s.io",
                "v1beta2",
                "MachineDeployment",
                "machinedeployments",
            ),
            Kind::Machine => ("cluster.x-k8s.io", "v1beta2", "Machine", "machines"),
            Kind::KubeadmControlPlane => (
                "controlplane.cluster.x-k8s.io",
                "v1beta2",
                "KubeadmControlPlane",
                "kubeadmcontrolplanes",
            ),
            Kind::KubeadmControlPlaneTemplate => (
                "controlplane.cluster.x-k8s.io",
                "v1beta2",
                "KubeadmControlPlaneTemplate",
                "kubeadmcontrolplanetemplates",
            ),
            Kind::KubeadmConfigTemplate => (
                "bootstrap.cluster.x-k8s.io",
                "v1beta2",
                "KubeadmConfigTemplate",
                "kubeadmconfigtemplates",
            ),
            Kind::OpenStackCluster => (
                "infrastructure.cluster.x-k8s.io",
                "v1beta1",
                "OpenStackCluster",
                "openstackclusters",
            ),
            Kind::OpenStackClusterTemplate => (
                "infrastructure.cluster.x-k8s.io",
                "v1beta1",
                "OpenStackClusterTemplate",
                "openstackclustertemplates",
            ),
            Kind::OpenStackMachineTemplate => (
                "infrastructure.cluster.x-k8s.io",
                "v1beta1",
                "OpenStackMachineTemplate",
                "openstackmachinetemplates",
            ),
            Kind::ClusterResourceSet => (
                "addons.cluster.x-k8s.io",
                "v1beta2",
                "ClusterResourceSet",
                "clusterresourcesets",
            ),
            Kind::HelmChartProxy => (
                "addons.cluster.x-k8s.io",
                "v1alpha1",
                "HelmChartProxy",
                "helmchartproxies",
            ),
            Kind::HelmReleaseProxy => (
                "addons.cluster.x-k8s.io",
                "v1alpha1",
                "HelmReleaseProxy",
                "helmreleaseproxies",
            ),
            Kind::MachineSet => ("cluster.x-k8s.io", "v1beta2", "MachineSet", "machinesets"),
            Kind::KubeadmConfig => (
                "bootstrap.cluster.x-k8s.io",
                "v1beta2",
                "KubeadmConfig",
                "kubeadmconfigs",
            ),
            Kind::OpenStackMachine => (
                "infrastructure.cluster.x-k8s.io",
                "v1beta1",
                "OpenStackMachine",
                "openstackmachines",
            ),
        }
    }

    /// The kind of a rendered object, from its apiVersion and kind.
    pub fn of(object: &Value) -> Option<Kind> {
        let api_version = object["apiVersion"].as_str()?;
        let kind = object["kind"].as_str()?;
        Kind::ALL.into_iter().find(|candidate| {
            let (group, version, name, _) = candidate.coordinates();
            let expected = if group.is_empty() {
                version.to_owned()
            } else {
                format!("{group}/{version}")
            };
            name == kind && expected == api_version
        })
    }

    fn resource(self) -> ApiResource {
        let (group, version, kind, plural) = self.coordinates();
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
    }
}

/// What went wrong talking to the management cluster.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManagementError {
    /// The request was refused for what it says (an admission webhook's 422, a schema
    /// violation): sending it again changes nothing. The message is the server's.
    #[error("The management cluster refused {what}: {message}")]
    Refused { what: String, message: String },
    /// The management cluster is away, overloaded or timed out: worth another try.
    #[error("The management cluster is unreachable: {0}")]
    Unavailable(String),
    /// The driver's own configuration is wrong (kubeconfig).
    #[error("The capi driver's kubeconfig is unusable: {0}")]
    Configuration(String),
    /// The management cluster lacks what the driver needs (CRDs of CAPI and its providers).
    #[error("The management cluster cannot run the capi driver: {0}")]
    Unserved(String),
}

impl ManagementError {
    pub fn is_transient(&self) -> bool {
        matches!(self, ManagementError::Unavailable(_))
    }

    fn from_kube(error: kube::Error, what: impl FnOnce() -> String) -> Self {
        match error {
            kube::Error::Api(status) => {
                let code = status.code;
                // 409 on apply is a conflict with another manager that `force` did not
                // resolve (or a stale resourceVersion): it may pass on the next attempt.
                if code == 408 || code == 409 || code == 429 || code >= 500 {
                    ManagementError::Unavailable(format!("{} ({code})", status.message))
                } else {
                    ManagementError::Refused {
                        what: what(),
                        message: status.message,
                    }
                }
            }
            other => ManagementError::Unavailable(other.to_string()),
        }
    }
}

fn describe(object: &Value) -> String {
    format!(
        "{} {}",
        object["kind"].as_str().unwrap_or("object"),
        object["metadata"]["name"].as_str().unwrap_or("?")
    )
}

/// The management cluster, reached through one client shared by every cluster and watch
/// (a client per call leaks connections and file descriptors under load).
#[derive(Clone)]
pub struct Management {
    client: kube::Client,
    namespace: String,
}

impl Management {
    /// Connects with the kubeconfig at `path` (its current context).
    pub async fn connect(path: &Path, namespace: &str) -> Result<Self, ManagementError> {
        let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(|error| {
            ManagementError::Configuration(format!("{}: {error}", path.display()))
        })?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .map_err(|error| ManagementError::Configuration(error.to_string()))?;
        let client = kube::Client::try_from(config)
            .map_err(|error| ManagementError::Configuration(error.to_string()))?;
        Ok(Self {
            client,
            namespace: namespace.to_owned(),
        })
    }

    /// The kinds the driver needs that the management cluster does not serve, by discovery
    /// (CAPI, CAPO or CAAPH missing, or an older version of them).
    pub async fn unserved_kinds(&self) -> Result<Vec<Kind>, ManagementError> {
        let mut by_api_version: std::collections::BTreeMap<String, Vec<Kind>> = Default::default();
        for kind in Kind::ALL.into_iter().filter(|kind| kind.is_required()) {
            let (group, version, _, _) = kind.coordinates();
            let api_version = if group.is_empty() {
                version.to_owned()
            } else {
                format!("{group}/{version}")
            };
            by_api_version.entry(api_version).or_default().push(kind);
        }
        let mut missing = Vec::new();
        for (api_version, kinds) in by_api_version {
            let served = if api_version.contains('/') {
                self.client.list_api_group_resources(&api_version).await
            } else {
                self.client.list_core_api_resources(&api_version).await
            };
            let names: Vec<String> = match served {
                Ok(list) => list
                    .resources
                    .into_iter()
                    .map(|resource| resource.name)
                    .collect(),
                Err(kube::Error::Api(status)) if status.code == 404 => Vec::new(),
                Err(error) => {
                    return Err(ManagementError::from_kube(error, || {
                        format!("discovering {api_version}")
                    }))
                }
            };
            missing.extend(
                kinds
                    .into_iter()
                    .filter(|kind| !names.iter().any(|name| name == kind.coordinates().3)),
            );
        }
        Ok(missing)
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    fn api(&self, kind: Kind) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.namespace, &kind.resource())
    }

    /// Server-side apply of the whole desired object, forced, with strict field validation:
    /// an unknown field is an error here rather than a silently dropped setting.
    pub async fn apply(&self, object: &Value) -> Result<Value, ManagementError> {
        let kind = Kind::of(object).ok_or_else(|| ManagementError::Refused {
            what: describe(object),
            message: "the driver does not write this kind".to_owned(),
        })?;
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let params = PatchParams::apply(FIELD_MANAGER)
            .force()
            .validation_strict();
        let applied = self
            .api(kind)
            .patch(name, &params, &Patch::Apply(object))
            .await
            .map_err(|error| ManagementError::from_kube(error, || describe(object)))?;
        serde_json::to_value(applied)
            .map_err(|error| ManagementError::Unavailable(error.to_string()))
    }

    /// Creates `object` unless an object of that name exists; whether it created it. For
    /// what must never be replaced once made (generated CA keys).
    pub async fn create_if_absent(&self, object: &Value) -> Result<bool, ManagementError> {
        let kind = Kind::of(object).ok_or_else(|| ManagementError::Refused {
            what: describe(object),
            message: "the driver does not write this kind".to_owned(),
        })?;
        let dynamic: DynamicObject = serde_json::from_value(object.clone())
            .map_err(|error| ManagementError::Unavailable(error.to_string()))?;
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..Default::default()
        };
        match self.api(kind).create(&params, &dynamic).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(ManagementError::from_kube(error, || describe(object))),
        }
    }

    pub async fn get(&self, kind: Kind, name: &str) -> Result<Option<Value>, ManagementError> {
        let found = self
            .api(kind)
            .get_opt(name)
            .await
            .map_err(|error| ManagementError::from_kube(error, || format!("reading {name}")))?;
        found
            .map(serde_json::to_value)
            .transpose()
            .map_err(|error| ManagementError::Unavailable(error.to_string()))
    }

    pub async fn list(&self, kind: Kind, selector: &str) -> Result<Vec<Value>, ManagementError> {
        let params = ListParams::default().labels(selector);
        let listed = match self.api(kind).list(&params).await {
            Ok(listed) => listed,
            // A kind the management cluster does not serve has nothing of ours.
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(Vec::new()),
            Err(error) => {
                return Err(ManagementError::from_kube(error, || {
                    format!("listing {selector}")
                }))
            }
        };
        listed
            .items
            .into_iter()
            .map(serde_json::to_value)
            .collect::<Result<_, _>>()
            .map_err(|error| ManagementError::Unavailable(error.to_string()))
    }

    /// Asks for `name` to go; true once it is gone (finalizers may keep it a while).
    pub async fn delete(&self, kind: Kind, name: &str) -> Result<bool, ManagementError> {
        match self
            .api(kind)
            .delete(name, &DeleteParams::background())
            .await
        {
            Ok(either) => Ok(either.is_right()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(true),
            Err(error) => Err(ManagementError::from_kube(error, || {
                format!("deleting {name}")
            })),
        }
    }

    /// Merges `patch` into `name` (annotations on Machines), as this driver's manager.
    pub async fn merge(
        &self,
        kind: Kind,
        name: &str,
        patch: &Value,
    ) -> Result<(), ManagementError> {
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..Default::default()
        };
        self.api(kind)
            .patch(name, &params, &Patch::Merge(patch))
            .await
            .map(|_| ())
            .map_err(|error| ManagementError::from_kube(error, || format!("patching {name}")))
    }

    /// Merges `patch` into `name` if it exists; whether it did.
    pub async fn merge_if_present(
        &self,
        kind: Kind,
        name: &str,
        patch: &Value,
    ) -> Result<bool, ManagementError> {
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..Default::default()
        };
        match self
            .api(kind)
            .patch(name, &params, &Patch::Merge(patch))
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
            Err(error) => Err(ManagementError::from_kube(error, || {
                format!("patching {name}")
            })),
        }
    }

    /// Releases `name` from its finalizers, so that a pending delete completes without the
    /// controllers that set them (what an admin's forced delete does after its grace).
    pub async fn drop_finalizers(&self, kind: Kind, name: &str) -> Result<(), ManagementError> {
        let patch = serde_json::json!({"metadata": {"finalizers": null}});
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..Default::default()
        };
        match self
            .api(kind)
            .patch(name, &params, &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(error) => Err(ManagementError::from_kube(error, || {
                format!("releasing {name}")
            })),
        }
    }

    /// The typed API of `kind` in the driver's namespace, for watches.
    pub fn dynamic_api(&self, kind: Kind) -> (Api<DynamicObject>, ApiResource) {
        (self.api(kind), kind.resource())
    }
}
