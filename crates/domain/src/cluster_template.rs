//! ClusterTemplates: the record, its enumerations and the rules upstream applies to it.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use uuid::Uuid;

use crate::labels::Labels;
use crate::time::Timestamp;

/// Container orchestration engines magnum-rs accepts in templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Coe {
    Kubernetes,
    SwarmMode,
}

impl Coe {
    pub const ALL: [Coe; 2] = [Coe::Kubernetes, Coe::SwarmMode];

    pub fn as_str(self) -> &'static str {
        match self {
            Coe::Kubernetes => "kubernetes",
            Coe::SwarmMode => "swarm-mode",
        }
    }
}

impl FromStr for Coe {
    type Err = ();

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Coe::ALL
            .into_iter()
            .find(|coe| coe.as_str() == value)
            .ok_or(())
    }
}

impl fmt::Display for Coe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServerType {
    Vm,
    Bm,
}

impl ServerType {
    pub const ALL: [ServerType; 2] = [ServerType::Vm, ServerType::Bm];

    pub fn as_str(self) -> &'static str {
        match self {
            ServerType::Vm => "vm",
            ServerType::Bm => "bm",
        }
    }
}

impl FromStr for ServerType {
    type Err = ();

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        ServerType::ALL
            .into_iter()
            .find(|server_type| server_type.as_str() == value)
            .ok_or(())
    }
}

impl fmt::Display for ServerType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A cluster template as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterTemplate {
    /// Database id; 0 until stored.
    pub id: i64,
    pub uuid: Uuid,
    pub name: Option<String>,
    pub coe: Coe,
    pub image_id: String,
    pub flavor_id: Option<String>,
    pub master_flavor_id: Option<String>,
    pub dns_nameserver: Option<String>,
    pub keypair_id: Option<String>,
    pub external_network_id: Option<String>,
    pub fixed_network: Option<String>,
    pub fixed_subnet: Option<String>,
    pub network_driver: Option<String>,
    pub volume_driver: Option<String>,
    pub apiserver_port: Option<i64>,
    pub docker_volume_size: Option<i64>,
    pub docker_storage_driver: Option<String>,
    pub cluster_distro: Option<String>,
    pub http_proxy: Option<String>,
    pub https_proxy: Option<String>,
    pub no_proxy: Option<String>,
    pub registry_enabled: bool,
    pub insecure_registry: Option<String>,
    pub labels: Labels,
    pub tls_disabled: bool,
    pub public: bool,
    pub hidden: bool,
    pub server_type: ServerType,
    pub master_lb_enabled: bool,
    pub floating_ip_enabled: bool,
    pub tags: Option<String>,
    pub driver: Option<String>,
    pub project_id: String,
    pub user_id: String,
    pub created_at: Timestamp,
    pub updated_at: Option<Timestamp>,
    /// Incremented by every stored change; updates are compare-and-set on it.
    pub version: i64,
}

impl ClusterTemplate {
    /// Names of the user-visible attributes whose values differ between `self` and `other`.
    pub fn changed_attributes(&self, other: &ClusterTemplate) -> Vec<&'static str> {
        let mut changed = Vec::new();
        macro_rules! compare {
            ($($field:ident),* $(,)?) => {
                $(if self.$field != other.$field { changed.push(stringify!($field)); })*
            };
        }
        compare!(
            name,
            coe,
            image_id,
            flavor_id,
            master_flavor_id,
            dns_nameserver,
            keypair_id,
            external_network_id,
            fixed_network,
            fixed_subnet,
            network_driver,
            volume_driver,
            apiserver_port,
            docker_volume_size,
            docker_storage_driver,
            cluster_distro,
            http_proxy,
            https_proxy,
            no_proxy,
            registry_enabled,
            insecure_registry,
            labels,
            tls_disabled,
            public,
            hidden,
            server_type,
            master_lb_enabled,
            floating_ip_enabled,
            tags,
            driver,
        );
        changed
    }

    /// Whether an update from `self` to `updated` may be applied while clusters use the
    /// template: only a rename, or exactly one change that is `public` turned on, `hidden`
    /// toggled, or `tags` set.
    pub fn update_allowed_while_in_use(&self, updated: &ClusterTemplate) -> bool {
        match updated.changed_attributes(self).as_slice() {
            [] => true,
            ["name"] => true,
            ["public"] => updated.public,
            ["hidden"] => true,
            ["tags"] => updated.tags.is_some(),
            _ => false,
        }
    }
}

/// What can be wrong with a template beyond the shape of its fields.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateRuleError {
    #[error("Requested COE type Unset is not supported.")]
    CoeUnset,
    #[error("Network driver type {driver} is not supported, expecting a {expected}/unspecified network driver.")]
    NetworkDriverNotSupported { driver: String, expected: String },
    // The trailing space is upstream's.
    #[error("Network driver type {driver} is not allowed, expecting a {expected}/unspecified network driver. ")]
    NetworkDriverNotAllowed { driver: String, expected: String },
    #[error("Volume driver type {driver} is not supported, expecting a {expected}/unspecified volume driver.")]
    VolumeDriverNotSupported { driver: String, expected: String },
    #[error("Expected a single dns address or comma separated dns list, but received {0}.")]
    InvalidDns(String),
    #[error("docker volume size {0} GB is not valid, expecting minimum value 3GB for devicemapper storage driver.")]
    DevicemapperVolumeTooSmall(String),
}

/// Per-COE network-driver settings (`[cluster_template]` in upstream's configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkDriverSettings {
    /// Drivers an operator allows; `all` allows every supported one.
    pub allowed: Vec<String>,
    pub default: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateRules {
    pub kubernetes: NetworkDriverSettings,
    pub swarm_mode: NetworkDriverSettings,
}

impl Default for TemplateRules {
    fn default() -> Self {
        Self {
            kubernetes: NetworkDriverSettings {
                allowed: vec!["flannel".to_owned(), "calico".to_owned()],
                default: "flannel".to_owned(),
            },
            swarm_mode: NetworkDriverSettings {
                allowed: vec!["all".to_owned()],
                default: "docker".to_owned(),
            },
        }
    }
}

impl TemplateRules {
    /// Network drivers a COE can work with at all.
    pub fn supported_network_drivers(coe: Coe) -> &'static [&'static str] {
        match coe {
            Coe::Kubernetes => &["flannel", "calico", "cilium"],
            // Swarm-mode's own overlay networking is the only one its nodes run.
            Coe::SwarmMode => &["docker"],
        }
    }

    /// Volume drivers a COE can work with at all.
    pub fn supported_volume_drivers(coe: Coe) -> &'static [&'static str] {
        match coe {
            Coe::Kubernetes => &["cinder"],
            Coe::SwarmMode => &[],
        }
    }

    fn settings(&self, coe: Coe) -> &NetworkDriverSettings {
        match coe {
            Coe::Kubernetes => &self.kubernetes,
            Coe::SwarmMode => &self.swarm_mode,
        }
    }

    /// Applies the default when no driver is given and checks the result.
    pub fn resolve_network_driver(
        &self,
        coe: Coe,
        requested: Option<&str>,
    ) -> Result<String, TemplateRuleError> {
        let settings = self.settings(coe);
        let driver = match requested {
            Some(driver) if !driver.is_empty() => driver.to_owned(),
            _ => settings.default.clone(),
        };
        let supported = Self::supported_network_drivers(coe);
        if !supported.contains(&driver.as_str()) {
            return Err(TemplateRuleError::NetworkDriverNotSupported {
                driver,
                expected: supported.join("/"),
            });
        }
        let allows_all = settings.allowed.iter().any(|allowed| allowed == "all");
        if !allows_all && !settings.allowed.contains(&driver) {
            return Err(TemplateRuleError::NetworkDriverNotAllowed {
                driver,
                expected: settings.allowed.join("/"),
            });
        }
        Ok(driver)
    }

    pub fn check_volume_driver(coe: Coe, driver: Option<&str>) -> Result<(), TemplateRuleError> {
        let Some(driver) = driver.filter(|driver| !driver.is_empty()) else {
            return Ok(());
        };
        let supported = Self::supported_volume_drivers(coe);
        if supported.contains(&driver) {
            Ok(())
        } else {
            Err(TemplateRuleError::VolumeDriverNotSupported {
                driver: driver.to_owned(),
                expected: if supported.is_empty() {
                    "no".to_owned()
                } else {
                    supported.join("/")
                },
            })
        }
    }

    pub fn check_dns_nameserver(dns: Option<&str>) -> Result<(), TemplateRuleError> {
        let Some(dns) = dns else {
            return Ok(());
        };
        let valid = dns
            .split(',')
            .all(|address| Ipv4Addr::from_str(address.trim()).is_ok());
        if valid {
            Ok(())
        } else {
            Err(TemplateRuleError::InvalidDns(dns.to_owned()))
        }
    }

    pub fn check_devicemapper(
        storage_driver: Option<&str>,
        volume_size: Option<i64>,
    ) -> Result<(), TemplateRuleError> {
        if storage_driver == Some("devicemapper") {
            match volume_size {
                Some(size) if size >= 3 => Ok(()),
                Some(size) => Err(TemplateRuleError::DevicemapperVolumeTooSmall(
                    size.to_string(),
                )),
                None => Err(TemplateRuleError::DevicemapperVolumeTooSmall(
                    "None".to_owned(),
                )),
            }
        } else {
            Ok(())
        }
    }

    /// Every rule a stored template must satisfy; returns the network driver to store.
    pub fn validate(&self, template: &ClusterTemplate) -> Result<String, TemplateRuleError> {
        let network_driver =
            self.resolve_network_driver(template.coe, template.network_driver.as_deref())?;
        Self::check_volume_driver(template.coe, template.volume_driver.as_deref())?;
        Self::check_dns_nameserver(template.dns_nameserver.as_deref())?;
        Self::check_devicemapper(
            template.docker_storage_driver.as_deref(),
            template.docker_volume_size,
        )?;
        Ok(network_driver)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_driver_messages_match_upstream() {
        let rules = TemplateRules::default();
        assert_eq!(
            rules.resolve_network_driver(Coe::Kubernetes, None).unwrap(),
            "flannel"
        );
        assert_eq!(
            rules
                .resolve_network_driver(Coe::Kubernetes, Some("weave"))
                .unwrap_err()
                .to_string(),
            "Network driver type weave is not supported, expecting a flannel/calico/cilium/unspecified network driver."
        );
        assert_eq!(
            rules
                .resolve_network_driver(Coe::Kubernetes, Some("cilium"))
                .unwrap_err()
                .to_string(),
            "Network driver type cilium is not allowed, expecting a flannel/calico/unspecified network driver. "
        );
        assert_eq!(
            rules
                .resolve_network_driver(Coe::SwarmMode, Some(""))
                .unwrap(),
            "docker"
        );
        assert!(rules
            .resolve_network_driver(Coe::SwarmMode, Some("flannel"))
            .is_err());
    }

    #[test]
    fn volume_dns_and_devicemapper_rules() {
        assert!(TemplateRules::check_volume_driver(Coe::Kubernetes, Some("cinder")).is_ok());
        assert_eq!(
            TemplateRules::check_volume_driver(Coe::Kubernetes, Some("rexray"))
                .unwrap_err()
                .to_string(),
            "Volume driver type rexray is not supported, expecting a cinder/unspecified volume driver."
        );
        assert!(TemplateRules::check_volume_driver(Coe::SwarmMode, Some("cinder")).is_err());
        assert!(TemplateRules::check_dns_nameserver(Some("8.8.8.8")).is_ok());
        assert!(TemplateRules::check_dns_nameserver(Some("8.8.8.8, 1.1.1.1")).is_ok());
        assert_eq!(
            TemplateRules::check_dns_nameserver(Some("not-an-ip"))
                .unwrap_err()
                .to_string(),
            "Expected a single dns address or comma separated dns list, but received not-an-ip."
        );
        assert!(TemplateRules::check_devicemapper(Some("devicemapper"), Some(1)).is_err());
        assert!(TemplateRules::check_devicemapper(Some("devicemapper"), Some(3)).is_ok());
        assert!(TemplateRules::check_devicemapper(Some("overlay2"), Some(1)).is_ok());
        assert_eq!(
            TemplateRules::check_devicemapper(Some("devicemapper"), None)
                .unwrap_err()
                .to_string(),
            "docker volume size None GB is not valid, expecting minimum value 3GB for devicemapper storage driver."
        );
    }

    fn template() -> ClusterTemplate {
        ClusterTemplate {
            id: 1,
            uuid: Uuid::new_v4(),
            name: Some("t".to_owned()),
            coe: Coe::SwarmMode,
            image_id: "local-node".to_owned(),
            flavor_id: None,
            master_flavor_id: None,
            dns_nameserver: None,
            keypair_id: None,
            external_network_id: None,
            fixed_network: None,
            fixed_subnet: None,
            network_driver: Some("docker".to_owned()),
            volume_driver: None,
            apiserver_port: None,
            docker_volume_size: None,
            docker_storage_driver: None,
            cluster_distro: Some("local".to_owned()),
            http_proxy: None,
            https_proxy: None,
            no_proxy: None,
            registry_enabled: false,
            insecure_registry: None,
            labels: Labels::new(),
            tls_disabled: false,
            public: false,
            hidden: false,
            server_type: ServerType::Vm,
            master_lb_enabled: false,
            floating_ip_enabled: true,
            tags: None,
            driver: Some("local".to_owned()),
            project_id: "p".to_owned(),
            user_id: "u".to_owned(),
            created_at: Timestamp::from_unix_seconds(0),
            updated_at: None,
            version: 1,
        }
    }

    #[test]
    fn in_use_rule_allows_only_upstreams_changes() {
        let before = template();
        let mut renamed = before.clone();
        renamed.name = Some("other".to_owned());
        assert!(before.update_allowed_while_in_use(&renamed));

        let mut published = before.clone();
        published.public = true;
        assert!(before.update_allowed_while_in_use(&published));
        assert!(
            !published.update_allowed_while_in_use(&before),
            "unpublishing is refused"
        );

        let mut hidden = before.clone();
        hidden.hidden = true;
        assert!(before.update_allowed_while_in_use(&hidden));

        let mut tagged = before.clone();
        tagged.tags = Some("a,b".to_owned());
        assert!(before.update_allowed_while_in_use(&tagged));
        assert!(!tagged.update_allowed_while_in_use(&before));

        let mut flavor = before.clone();
        flavor.flavor_id = Some("local.medium".to_owned());
        assert!(!before.update_allowed_while_in_use(&flavor));

        let mut two = renamed.clone();
        two.public = true;
        assert!(!before.update_allowed_while_in_use(&two));
    }
}
