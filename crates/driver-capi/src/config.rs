//! `[drivers.capi]`: how an operator connects magnumd to a management cluster.

use std::path::PathBuf;

use serde::Deserialize;

use crate::catalog::Catalog;
use crate::render::ApplicationCredential;
use crate::settings::{AddonSettings, Chart, CloudSettings, Settings};

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CapiConfig {
    /// The management cluster's kubeconfig (its current context is used).
    pub kubeconfig: Option<PathBuf>,
    /// Where the driver's objects live on the management cluster.
    pub namespace: String,
    /// The Kubernetes version of templates without a `kube_tag` label.
    pub default_kubernetes_version: String,
    /// The image OS distros the driver provides clusters for.
    pub os_distros: Vec<String>,
    /// Keystone as clusters reach it (their `clouds.yaml`); by default `auth.keystone.auth_url`.
    pub auth_url: Option<String>,
    pub region_name: Option<String>,
    /// `public`, `internal` or `admin`.
    pub interface: String,
    /// PEM file of the cloud's CA bundle, given to CAPO and the cloud provider.
    pub ca_bundle_file: Option<PathBuf>,
    /// A registry mirroring the addons' images, for clouds without internet access.
    pub image_registry: Option<String>,
    /// Chart versions and repositories, when an operator pins others than the built-in ones.
    pub charts: ChartsConfig,
    /// The OpenStack resources templates may name (images, flavors, networks, keypairs).
    pub catalog: Catalog,
    /// The application credential clusters use to reach the cloud.
    pub credential: CredentialConfig,
    /// The projects whose clusters the driver builds (required: see `credential`).
    pub allowed_projects: Vec<String>,
    /// Seconds Cluster API gets to tear a force-deleted cluster down before the driver
    /// releases its objects from their finalizers (1 to 86,400).
    pub force_delete_grace: u64,
    /// Whether deleting a cluster first removes the Octavia load balancers its cloud
    /// provider made for `LoadBalancer` Services (with the cluster's own credential).
    pub delete_load_balancers: bool,
    /// Serve CA rotation (three rolls of every machine; see CAPI.md for what has not been
    /// checked on a real management cluster yet). Off by default.
    pub ca_rotation: bool,
    /// Give every cluster a Keystone application credential of its own, created in its
    /// owner's name with their token when the cluster is created (needs `auth.strategy =
    /// "keystone"`). Then `credential` and `allowed_projects` are optional: no cluster sees
    /// another's credential. Default: on exactly when Keystone authenticates.
    pub delegated_credentials: Option<bool>,
    /// The roles a delegated credential gets (each must be the owner's on the project);
    /// empty: all of the owner's. Magnum's `[trust] roles`.
    pub credential_roles: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChartsConfig {
    pub calico: Option<ChartConfig>,
    pub cilium: Option<ChartConfig>,
    pub flannel: Option<ChartConfig>,
    pub cloud_controller_manager: Option<ChartConfig>,
    pub cinder_csi: Option<ChartConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChartConfig {
    pub repository: String,
    pub name: String,
    pub version: String,
}

/// One application credential shared by every cluster: CAPO and the cloud provider act with
/// it, and it is copied into every workload cluster (`kube-system/cloud-config`), where any
/// cluster admin reads it. So the driver serves only `allowed_projects`, which should be the
/// one project that credential belongs to; per-cluster credentials in the owner's name need
/// Keystone trusts (not yet built).
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CredentialConfig {
    pub application_credential_id: String,
    pub application_credential_secret: String,
}

impl std::fmt::Debug for CredentialConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialConfig")
            .field("application_credential_id", &self.application_credential_id)
            .field("application_credential_secret", &"<redacted>")
            .finish()
    }
}

impl Default for CapiConfig {
    fn default() -> Self {
        Self {
            kubeconfig: None,
            namespace: "magnum-system".to_owned(),
            default_kubernetes_version: "v1.33.5".to_owned(),
            // Flatcar needs CABPK's KubeadmBootstrapFormatIgnition gate and its own node
            // naming: listed only by operators who set those up.
            os_distros: vec!["ubuntu".to_owned()],
            auth_url: None,
            region_name: None,
            interface: "public".to_owned(),
            ca_bundle_file: None,
            image_registry: None,
            charts: ChartsConfig::default(),
            catalog: Catalog::default(),
            credential: CredentialConfig::default(),
            allowed_projects: Vec::new(),
            force_delete_grace: 600,
            delete_load_balancers: true,
            ca_rotation: false,
            delegated_credentials: None,
            credential_roles: Vec::new(),
        }
    }
}

/// A setting that is wrong, named as the configuration file names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("drivers.capi.{setting}: {reason}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub reason: String,
}

fn error(setting: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        setting,
        reason: reason.into(),
    }
}

impl CapiConfig {
    /// Checks the settings and reads the files they name.
    pub fn settings(&self, keystone_auth_url: Option<&str>) -> Result<Settings, ConfigError> {
        let Some(kubeconfig) = &self.kubeconfig else {
            return Err(error(
                "kubeconfig",
                "the management cluster's kubeconfig is required",
            ));
        };
        // It holds the credentials of the management cluster.
        {
            use std::os::unix::fs::PermissionsExt;
            let metadata = std::fs::metadata(kubeconfig)
                .map_err(|e| error("kubeconfig", format!("{}: {e}", kubeconfig.display())))?;
            if metadata.permissions().mode() & 0o077 != 0 {
                return Err(error(
                    "kubeconfig",
                    format!(
                        "{} is readable by others: chmod 600 it",
                        kubeconfig.display()
                    ),
                ));
            }
        }
        if !(1..=86_400).contains(&self.force_delete_grace) {
            return Err(error(
                "force_delete_grace",
                format!("{} is outside 1 to 86400 seconds", self.force_delete_grace),
            ));
        }
        let delegated = self.delegated_credentials.unwrap_or(false);
        if self.allowed_projects.is_empty() && !delegated {
            return Err(error(
                "allowed_projects",
                "list the project(s) whose clusters may share the configured credential (every cluster admin can read it)",
            ));
        }
        if !crate::names::is_dns_label(&self.namespace) {
            return Err(error(
                "namespace",
                format!("{:?} is not a namespace name", self.namespace),
            ));
        }
        if !["public", "internal", "admin"].contains(&self.interface.as_str()) {
            return Err(error("interface", "expected public, internal or admin"));
        }
        let auth_url = self
            .auth_url
            .as_deref()
            .or(keystone_auth_url)
            .filter(|url| url.starts_with("http://") || url.starts_with("https://"))
            .ok_or_else(|| {
                error(
                    "auth_url",
                    "Keystone's URL as clusters reach it is required (http:// or https://)",
                )
            })?;
        if self.os_distros.is_empty() {
            return Err(error("os_distros", "at least one OS distro is required"));
        }
        let ca_bundle = match &self.ca_bundle_file {
            None => None,
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| error("ca_bundle_file", format!("{}: {e}", path.display())))?;
                if !text.contains("-----BEGIN CERTIFICATE-----") {
                    return Err(error(
                        "ca_bundle_file",
                        format!("{}: no PEM certificate", path.display()),
                    ));
                }
                Some(text)
            }
        };
        let no_shared_credential = self.credential.application_credential_id.is_empty()
            || self.credential.application_credential_secret.is_empty();
        if no_shared_credential && !delegated {
            return Err(error(
                "credential",
                "application_credential_id and application_credential_secret are required",
            ));
        }
        let mut addons = AddonSettings::default();
        let chart = |configured: &Option<ChartConfig>, built_in: &mut Chart| {
            if let Some(configured) = configured {
                *built_in = Chart {
                    repository: configured.repository.clone(),
                    name: configured.name.clone(),
                    version: configured.version.clone(),
                };
            }
        };
        chart(&self.charts.calico, &mut addons.calico);
        chart(&self.charts.cilium, &mut addons.cilium);
        chart(&self.charts.flannel, &mut addons.flannel);
        chart(
            &self.charts.cloud_controller_manager,
            &mut addons.cloud_controller_manager,
        );
        chart(&self.charts.cinder_csi, &mut addons.cinder_csi);
        addons.image_registry = self.image_registry.clone();
        let mut images = self.catalog.images.iter();
        if let Some(bad) = images.find(|image| uuid::Uuid::parse_str(&image.id).is_err()) {
            return Err(error(
                "catalog.images",
                format!("image {:?}: its id must be a Glance uuid", bad.name),
            ));
        }
        Ok(Settings {
            namespace: self.namespace.clone(),
            default_kubernetes_version: self.default_kubernetes_version.clone(),
            os_distros: self.os_distros.clone(),
            cloud: CloudSettings {
                auth_url: auth_url.to_owned(),
                region_name: self.region_name.clone(),
                interface: self.interface.clone(),
                ca_bundle,
            },
            addons,
            allowed_projects: self.allowed_projects.clone(),
            force_delete_grace: std::time::Duration::from_secs(self.force_delete_grace),
            delete_load_balancers: self.delete_load_balancers,
            ca_rotation: self.ca_rotation,
            delegated_credentials: delegated,
            credential_roles: self.credential_roles.clone(),
            resync_interval: std::time::Duration::from_secs(300),
        })
    }

    /// The shared credential, when one is configured.
    pub fn credential(&self) -> Option<ApplicationCredential> {
        let configured = &self.credential;
        (!configured.application_credential_id.is_empty()
            && !configured.application_credential_secret.is_empty())
        .then(|| ApplicationCredential {
            id: configured.application_credential_id.clone(),
            secret: configured.application_credential_secret.clone(),
        })
    }
}

/// Gives each cluster the credential delegated to it in its owner's name
/// (`ClusterSpec::credential`) or, without one, the configured shared credential, and that
/// only to clusters of `shared_projects` (delegation lets `allowed_projects` be empty: the
/// operator's credential must not go to every project then).
pub struct ConfiguredCredential {
    pub shared: Option<ApplicationCredential>,
    pub shared_projects: Vec<String>,
}

#[async_trait::async_trait]
impl crate::driver::CredentialIssuer for ConfiguredCredential {
    async fn issue(
        &self,
        spec: &magnum_driver::ClusterSpec,
    ) -> Result<ApplicationCredential, String> {
        if let Some(delegated) = &spec.credential {
            return Ok(ApplicationCredential {
                id: delegated.id.clone(),
                secret: delegated.secret.clone(),
            });
        }
        let project = &spec.cluster.project_id;
        match &self.shared {
            Some(shared) if self.shared_projects.iter().any(|allowed| allowed == project) => {
                Ok(shared.clone())
            }
            _ => Err("This cluster has no application credential of its own (it was created before drivers.capi.delegated_credentials was on): rotate its credentials (PATCH /v1/credentials/<cluster>) to give it one.".to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn configured(kubeconfig: &std::path::Path) -> CapiConfig {
        CapiConfig {
            kubeconfig: Some(kubeconfig.to_owned()),
            auth_url: Some("https://keystone.test/v3".to_owned()),
            allowed_projects: vec!["p1".to_owned()],
            credential: CredentialConfig {
                application_credential_id: "id".to_owned(),
                application_credential_secret: "very-secret".to_owned(),
            },
            ..CapiConfig::default()
        }
    }

    #[test]
    fn a_usable_configuration_is_checked_for_what_would_leak_or_fail() {
        let directory = tempfile::tempdir().unwrap();
        let kubeconfig = directory.path().join("kubeconfig");
        std::fs::write(&kubeconfig, "apiVersion: v1\n").unwrap();
        std::fs::set_permissions(&kubeconfig, std::fs::Permissions::from_mode(0o600)).unwrap();
        let good = configured(&kubeconfig);
        let settings = good.settings(None).unwrap();
        assert_eq!(settings.allowed_projects, ["p1"]);
        assert_eq!(settings.os_distros, ["ubuntu"]);

        let mut no_projects = good.clone();
        no_projects.allowed_projects.clear();
        assert_eq!(
            no_projects.settings(None).unwrap_err().setting,
            "allowed_projects"
        );

        let mut no_credential = good.clone();
        no_credential
            .credential
            .application_credential_secret
            .clear();
        assert_eq!(
            no_credential.settings(None).unwrap_err().setting,
            "credential"
        );

        let mut bad_interface = good.clone();
        bad_interface.interface = "private".to_owned();
        assert_eq!(
            bad_interface.settings(None).unwrap_err().setting,
            "interface"
        );

        for grace in [0, 86_401] {
            let mut bad_grace = good.clone();
            bad_grace.force_delete_grace = grace;
            assert_eq!(
                bad_grace.settings(None).unwrap_err().setting,
                "force_delete_grace"
            );
        }
        // What an operator did not ask for is off.
        assert!(!settings.ca_rotation);
        assert!(settings.delete_load_balancers);
        assert_eq!(settings.force_delete_grace.as_secs(), 600);

        let mut no_keystone = good.clone();
        no_keystone.auth_url = None;
        assert_eq!(no_keystone.settings(None).unwrap_err().setting, "auth_url");
        assert!(no_keystone
            .settings(Some("http://keystone:5000/v3"))
            .is_ok());

        std::fs::set_permissions(&kubeconfig, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = good.settings(None).unwrap_err();
        assert_eq!(error.setting, "kubeconfig");
        assert!(error.reason.contains("chmod 600"), "{error}");

        assert!(!format!("{good:?}").contains("very-secret"));
    }
}
