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
/// it. Suits a private cloud of one project; per-cluster credentials in the owner's name
/// need Keystone trusts (not yet built).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CredentialConfig {
    pub application_credential_id: String,
    pub application_credential_secret: String,
}

impl Default for CapiConfig {
    fn default() -> Self {
        Self {
            kubeconfig: None,
            namespace: "magnum-system".to_owned(),
            default_kubernetes_version: "v1.33.5".to_owned(),
            os_distros: vec!["ubuntu".to_owned(), "flatcar".to_owned()],
            auth_url: None,
            region_name: None,
            interface: "public".to_owned(),
            ca_bundle_file: None,
            image_registry: None,
            charts: ChartsConfig::default(),
            catalog: Catalog::default(),
            credential: CredentialConfig::default(),
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
        if self.kubeconfig.is_none() {
            return Err(error(
                "kubeconfig",
                "the management cluster's kubeconfig is required",
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
        if self.credential.application_credential_id.is_empty()
            || self.credential.application_credential_secret.is_empty()
        {
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
        })
    }

    pub fn credential(&self) -> ApplicationCredential {
        ApplicationCredential {
            id: self.credential.application_credential_id.clone(),
            secret: self.credential.application_credential_secret.clone(),
        }
    }
}

/// Gives every cluster the configured credential, and never revokes it (it is the
/// operator's).
pub struct ConfiguredCredential(pub ApplicationCredential);

#[async_trait::async_trait]
impl crate::driver::CredentialIssuer for ConfiguredCredential {
    async fn issue(
        &self,
        _spec: &magnum_driver::ClusterSpec,
    ) -> Result<ApplicationCredential, String> {
        Ok(self.0.clone())
    }

    async fn revoke(&self, _spec: &magnum_driver::ClusterSpec, _id: &str) -> Result<(), String> {
        Ok(())
    }
}
