//! The `local` driver: swarm-mode clusters whose nodes are network namespaces on this host,
//! each running its own dockerd. This part holds its catalog — the node images, flavors and
//! networks templates may refer to — loaded from configuration.

use magnum_domain::cluster_template::{Coe, ServerType};
mod autoscaler;
mod monitor;
mod runtime;
mod sandbox;

use magnum_driver::{
    Action, ClusterSpec, ClusterType, Converge, Driver, DriverError, Image, Observed, Progress,
    ReferenceError, References,
};
use serde::Deserialize;

pub const DRIVER_NAME: &str = "local";

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogImage {
    pub name: String,
    /// Defaults to the name.
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub os_distro: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogFlavor {
    pub name: String,
    #[serde(default)]
    pub id: Option<String>,
    pub vcpus: u32,
    pub ram_mib: u64,
    #[serde(default = "default_disk_gib")]
    pub disk_gib: u64,
}

fn default_disk_gib() -> u64 {
    10
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogNetwork {
    pub name: String,
    #[serde(default)]
    pub id: Option<String>,
}

/// What templates using the local driver may refer to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Catalog {
    /// The private /16 cluster networks are cut from (a /24 each), e.g. "10.77.0.0/16".
    pub network_pool: String,
    /// Nodes one cluster may have on this host.
    pub max_nodes: usize,
    pub images: Vec<CatalogImage>,
    pub flavors: Vec<CatalogFlavor>,
    pub external_networks: Vec<CatalogNetwork>,
    pub fixed_networks: Vec<CatalogNetwork>,
    pub fixed_subnets: Vec<CatalogNetwork>,
    pub keypairs: Vec<String>,
    /// Projects that may build clusters with this driver; empty means every project.
    pub allowed_projects: Vec<String>,
    /// The `magnum-node-authz` binary; by default the one beside magnumd's executable.
    pub authz_binary: Option<std::path::PathBuf>,
    /// Processes the containers of one node may run together (their cgroup's pids.max).
    pub max_pids_per_node: u32,
    /// Autoscaling of swarm-mode clusters from their workload (`[drivers.local.autoscaler]`).
    pub autoscaler: AutoscalerConfig,
}

/// `[drivers.local.autoscaler]`: how the monitor autoscales the worker nodegroups of
/// clusters with `auto_scaling_enabled=true` (times in seconds; bounds in [`Self::check`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AutoscalerConfig {
    /// Whether this process autoscales at all (clusters still opt in with their label).
    pub enabled: bool,
    /// How often each autoscaled cluster's swarm is looked at (1 to 300).
    pub scan_interval: u64,
    /// How long a task stays pending for want of a node before nodes are added (0 to 3,600).
    pub scale_out_delay: u64,
    /// How long a node runs no task (but global services') before it is removed (1 to 86,400).
    pub scale_in_idle: u64,
    /// How long after a user's resize of a nodegroup the autoscaler leaves it alone (0 to
    /// 86,400); also how long it waits after one of its own changes failed.
    pub cool_down: u64,
}

impl Default for AutoscalerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            scan_interval: 10,
            scale_out_delay: 30,
            scale_in_idle: 600,
            cool_down: 600,
        }
    }
}

impl AutoscalerConfig {
    /// The settings' bounds, as a sentence naming the setting that breaks one.
    pub fn check(&self) -> Result<(), String> {
        for (name, value, low, high) in [
            ("scan_interval", self.scan_interval, 1, 300),
            ("scale_out_delay", self.scale_out_delay, 0, 3_600),
            ("scale_in_idle", self.scale_in_idle, 1, 86_400),
            ("cool_down", self.cool_down, 0, 86_400),
        ] {
            if !(low..=high).contains(&value) {
                return Err(format!(
                    "drivers.local.autoscaler.{name} must be between {low} and {high} seconds"
                ));
            }
        }
        Ok(())
    }
}

impl Default for Catalog {
    fn default() -> Self {
        Self {
            network_pool: "10.77.0.0/16".to_owned(),
            max_nodes: 40,
            images: vec![CatalogImage {
                name: "local-node".to_owned(),
                id: None,
                os_distro: Some("local".to_owned()),
            }],
            flavors: vec![
                CatalogFlavor {
                    name: "local.small".to_owned(),
                    id: None,
                    vcpus: 1,
                    ram_mib: 1024,
                    disk_gib: default_disk_gib(),
                },
                CatalogFlavor {
                    name: "local.medium".to_owned(),
                    id: None,
                    vcpus: 2,
                    ram_mib: 2048,
                    disk_gib: default_disk_gib(),
                },
            ],
            external_networks: vec![CatalogNetwork {
                name: "local".to_owned(),
                id: None,
            }],
            fixed_networks: Vec::new(),
            fixed_subnets: Vec::new(),
            keypairs: Vec::new(),
            allowed_projects: Vec::new(),
            authz_binary: None,
            max_pids_per_node: 4096,
            autoscaler: AutoscalerConfig::default(),
        }
    }
}

fn matches(name: &str, id: Option<&String>, reference: &str) -> bool {
    name == reference || id.is_some_and(|id| id == reference)
}

pub struct LocalDriver {
    catalog: Catalog,
    runtime: Option<runtime::Runtime>,
    /// Health changes, published by the monitor started on first subscription.
    events: std::sync::OnceLock<tokio::sync::broadcast::Sender<magnum_driver::DriverEvent>>,
    /// The clusters the monitor may look at (this process's monitor leases), and its wake-ups.
    monitor: std::sync::Arc<monitor::Shared>,
    /// Why clusters cannot be built here, when they cannot.
    unavailable: Option<String>,
}

/// The authorization plugin every node runs: the configured path, else `magnum-node-authz`
/// beside magnumd's executable (or one directory up, where cargo puts test executables).
pub fn authz_binary(configured: Option<&std::path::Path>) -> Option<std::path::PathBuf> {
    if let Some(path) = configured {
        return Some(path.to_owned());
    }
    let executable = std::env::current_exe().ok()?;
    let directory = executable.parent()?;
    let found = [Some(directory), directory.parent()]
        .into_iter()
        .flatten()
        .map(|directory| directory.join("magnum-node-authz"))
        .find(|candidate| candidate.is_file());
    found
}

/// What the driver needs on the host, as one sentence when something is missing.
fn host_requirements(authz: Option<&std::path::Path>) -> Option<String> {
    let mut missing = Vec::new();
    let is_root = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").is_ok_and(|metadata| metadata.uid() == 0)
    };
    if !is_root {
        missing.push("root privileges".to_owned());
    }
    let path = std::env::var("PATH").unwrap_or_default();
    for program in [
        "dockerd",
        "docker",
        "docker-init",
        "ip",
        "nft",
        "unshare",
        "setsid",
        "pivot_root",
        "hostname",
        "tar",
    ] {
        let found = path
            .split(':')
            .any(|directory| std::path::Path::new(directory).join(program).exists());
        if !found {
            missing.push(program.to_owned());
        }
    }
    // Node limits and namespaces use cgroup v1 hierarchies (a v2-only host has none).
    if !std::path::Path::new("/sys/fs/cgroup/memory/cgroup.procs").exists() {
        missing
            .push("cgroup v1 hierarchies under /sys/fs/cgroup (memory, cpu, pids, …)".to_owned());
    }
    // Nodes see only the host's /usr: what they run must live there.
    for program in ["/usr/bin/docker-init", "/usr/sbin/dockerd", "/bin/busybox"] {
        if !std::path::Path::new(program).exists() {
            missing.push(program.to_owned());
        }
    }
    match authz {
        Some(binary) if binary.is_file() => {}
        Some(binary) => missing.push(format!(
            "the node authorization plugin {} (drivers.local.authz_binary)",
            binary.display()
        )),
        None => missing
            .push("magnum-node-authz beside magnumd (or drivers.local.authz_binary)".to_owned()),
    }
    (!missing.is_empty()).then(|| {
        format!(
            "The local driver cannot build clusters on this host: it needs root and dockerd \
             (apt-get install docker.io busybox-static iproute2 nftables); missing: {}.",
            missing.join(", ")
        )
    })
}

fn parse_pool(pool: &str) -> Option<[u8; 2]> {
    let address = pool.split('/').next()?;
    let octets: Vec<u8> = address
        .split('.')
        .filter_map(|part| part.parse().ok())
        .collect();
    (octets.len() == 4).then(|| [octets[0], octets[1]])
}

impl LocalDriver {
    /// A driver that only validates references (no state directory: it builds nothing).
    pub fn new(catalog: Catalog) -> Self {
        Self {
            catalog,
            runtime: None,
            events: std::sync::OnceLock::new(),
            monitor: std::sync::Arc::default(),
            unavailable: None,
        }
    }

    /// A driver that builds clusters, keeping its records in `state_dir`.
    pub fn with_state_dir(catalog: Catalog, state_dir: std::path::PathBuf) -> Self {
        // Host-wide claims name their owners by path: it must mean the same in every process.
        let state_dir = std::path::absolute(&state_dir).unwrap_or(state_dir);
        let pool = parse_pool(&catalog.network_pool).unwrap_or([10, 77]);
        let mut flavors = std::collections::HashMap::new();
        for flavor in &catalog.flavors {
            flavors.insert(flavor.name.clone(), (flavor.vcpus, flavor.ram_mib));
            if let Some(id) = &flavor.id {
                flavors.insert(id.clone(), (flavor.vcpus, flavor.ram_mib));
            }
        }
        let authz = authz_binary(catalog.authz_binary.as_deref());
        let unavailable = host_requirements(authz.as_deref());
        let runtime = runtime::Runtime {
            state_dir,
            pool,
            max_nodes: catalog.max_nodes,
            flavors,
            locks: std::sync::Arc::default(),
            authz_binary: authz.unwrap_or_default(),
            max_pids_per_node: catalog.max_pids_per_node,
            claims: std::sync::Arc::default(),
            metrics: Default::default(),
            autoscaler: catalog.autoscaler,
        };
        Self {
            catalog,
            runtime: Some(runtime),
            events: std::sync::OnceLock::new(),
            monitor: std::sync::Arc::default(),
            unavailable,
        }
    }

    /// Records how long its steps take (a node's start, swarm init and join) into
    /// `metrics` (magnumd's registry).
    pub fn with_metrics(mut self, metrics: magnum_metrics::DriverStepMetrics) -> Self {
        if let Some(runtime) = &mut self.runtime {
            runtime.metrics = metrics;
        }
        self
    }

    /// Why this host cannot run clusters, if it cannot.
    pub fn unavailable(&self) -> Option<&str> {
        self.unavailable.as_deref()
    }

    fn runtime(&self) -> Result<&runtime::Runtime, magnum_driver::DriverError> {
        match (&self.runtime, &self.unavailable) {
            (Some(runtime), None) => Ok(runtime),
            (_, Some(reason)) => Err(magnum_driver::DriverError::Failed(reason.clone())),
            (None, None) => Err(magnum_driver::DriverError::Failed(
                "The local driver has no state directory configured.".to_owned(),
            )),
        }
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    fn flavor(&self, reference: &str) -> Option<&CatalogFlavor> {
        self.catalog
            .flavors
            .iter()
            .find(|flavor| matches(&flavor.name, flavor.id.as_ref(), reference))
    }

    fn check_network(
        networks: &[CatalogNetwork],
        reference: Option<&str>,
        missing: fn(String) -> ReferenceError,
        ambiguous: Option<fn(String) -> ReferenceError>,
    ) -> Result<(), ReferenceError> {
        let Some(reference) = reference else {
            return Ok(());
        };
        let count = networks
            .iter()
            .filter(|network| matches(&network.name, network.id.as_ref(), reference))
            .count();
        match (count, ambiguous) {
            (0, _) => Err(missing(reference.to_owned())),
            (1, _) | (_, None) => Ok(()),
            (_, Some(ambiguous)) => Err(ambiguous(reference.to_owned())),
        }
    }
}

#[async_trait::async_trait]
impl Driver for LocalDriver {
    fn name(&self) -> &str {
        DRIVER_NAME
    }

    fn provides(&self) -> Vec<ClusterType> {
        let mut distros: Vec<&str> = self
            .catalog
            .images
            .iter()
            .filter_map(|image| image.os_distro.as_deref())
            .collect();
        distros.sort_unstable();
        distros.dedup();
        distros
            .into_iter()
            .map(|os_distro| ClusterType {
                server_type: ServerType::Vm,
                os_distro: os_distro.to_owned(),
                coe: Coe::SwarmMode,
            })
            .collect()
    }

    fn find_image(&self, reference: &str) -> Result<Option<Image>, ReferenceError> {
        let found: Vec<&CatalogImage> = self
            .catalog
            .images
            .iter()
            .filter(|image| matches(&image.name, image.id.as_ref(), reference))
            .collect();
        match found.as_slice() {
            [] => Ok(None),
            [image] => Ok(Some(Image {
                id: image.id.clone().unwrap_or_else(|| image.name.clone()),
                name: image.name.clone(),
                os_distro: image.os_distro.clone(),
            })),
            _ => Err(ReferenceError::ImageAmbiguous(reference.to_owned())),
        }
    }

    fn validate_references(&self, references: &References<'_>) -> Result<(), ReferenceError> {
        if let Some(reason) = &self.unavailable {
            return Err(ReferenceError::DriverUnavailable(reason.clone()));
        }
        let boot_volume_size = match references.boot_volume_size {
            Some(text) => text
                .trim()
                .parse::<i64>()
                .map_err(|_| ReferenceError::InvalidBootVolumeSize(text.to_owned()))?,
            None => 0,
        };
        for flavor_reference in [references.flavor_id, references.master_flavor_id]
            .into_iter()
            .flatten()
        {
            let flavor = self
                .flavor(flavor_reference)
                .ok_or_else(|| ReferenceError::FlavorNotFound(flavor_reference.to_owned()))?;
            if boot_volume_size <= 0 && flavor.disk_gib == 0 {
                return Err(ReferenceError::FlavorWithoutRootDisk);
            }
        }
        Self::check_network(
            &self.catalog.external_networks,
            references.external_network_id,
            ReferenceError::ExternalNetworkNotFound,
            Some(ReferenceError::ExternalNetworkAmbiguous),
        )?;
        Self::check_network(
            &self.catalog.fixed_networks,
            references.fixed_network,
            ReferenceError::FixedNetworkNotFound,
            None,
        )?;
        Self::check_network(
            &self.catalog.fixed_subnets,
            references.fixed_subnet,
            ReferenceError::FixedSubnetNotFound,
            None,
        )?;
        if let Some(keypair) = references.keypair {
            if !self.catalog.keypairs.iter().any(|known| known == keypair) {
                return Err(ReferenceError::KeypairNotFound(keypair.to_owned()));
            }
        }
        Ok(())
    }

    fn supports(&self, action: Action) -> bool {
        self.runtime.is_some() && action != Action::RotateCredentials
    }

    fn permits_project(&self, project_id: &str) -> Result<(), String> {
        let allowed = &self.catalog.allowed_projects;
        if allowed.is_empty() || allowed.iter().any(|project| project == project_id) {
            Ok(())
        } else {
            Err(format!(
                "The local driver does not build clusters for project {project_id} \
                 (drivers.local.allowed_projects)."
            ))
        }
    }

    fn nodes_available(&self) -> Option<i64> {
        let runtime = self.runtime.as_ref()?;
        let used = runtime.nodes_on_host();
        Some(i64::try_from(runtime.max_nodes.saturating_sub(used)).unwrap_or(0))
    }

    fn check_upgrade(
        &self,
        current: &magnum_domain::cluster_template::ClusterTemplate,
        new: &magnum_domain::cluster_template::ClusterTemplate,
    ) -> Result<(), String> {
        let mut fixed = Vec::new();
        if current.tls_disabled != new.tls_disabled {
            fixed.push("tls_disabled");
        }
        if current.network_driver != new.network_driver {
            fixed.push("network_driver");
        }
        if current.docker_storage_driver != new.docker_storage_driver {
            fixed.push("docker_storage_driver");
        }
        if fixed.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "The local driver cannot change {} of a running cluster.",
                fixed.join(", ")
            ))
        }
    }

    async fn converge(
        &self,
        request: Converge<'_>,
        progress: &dyn Progress,
    ) -> Result<Observed, DriverError> {
        let cluster = request.spec.cluster.uuid;
        let converged = self.runtime()?.converge(request, progress).await;
        // The change let go of the cluster: its health is told now, not at the next tick.
        self.monitor.wake_for(cluster);
        converged
    }

    async fn delete(&self, spec: &ClusterSpec, progress: &dyn Progress) -> Result<(), DriverError> {
        self.runtime()?.delete(spec.cluster.uuid, progress).await
    }

    async fn abandon(&self, cluster: &magnum_domain::cluster::Cluster) -> Result<(), DriverError> {
        // The records go at once; the nodes (seconds of work) go in the background, after
        // any converge still holding the cluster has let go of it.
        let runtime = self.runtime()?.clone();
        let uuid = cluster.uuid;
        tokio::spawn(async move {
            if let Err(error) = runtime.delete(uuid, &Unreported).await {
                tracing::error!(cluster.id = %uuid, %error, "the nodes of a force-deleted cluster could not all be removed");
            }
        });
        Ok(())
    }

    async fn release_deleted(&self, cluster: uuid::Uuid) -> Result<(), DriverError> {
        tracing::warn!(cluster.id = %cluster, "removing the nodes of a cluster whose records are gone");
        self.runtime()?.delete(cluster, &Unreported).await
    }

    fn events(&self) -> Option<tokio::sync::broadcast::Receiver<magnum_driver::DriverEvent>> {
        let runtime = self.runtime().ok()?.clone();
        let sender = self.events.get_or_init(|| {
            let (sender, _) = tokio::sync::broadcast::channel(256);
            tokio::spawn(monitor::run(runtime, sender.clone(), self.monitor.clone()));
            sender
        });
        Some(sender.subscribe())
    }

    async fn monitorable_clusters(&self) -> Option<Vec<uuid::Uuid>> {
        let runtime = self.runtime().ok()?.clone();
        // A directory listing: kept off the async runtime.
        tokio::task::spawn_blocking(move || runtime.known_clusters())
            .await
            .ok()
    }

    fn monitor_only(
        &self,
        clusters: std::collections::HashSet<uuid::Uuid>,
        until: std::time::Instant,
    ) {
        self.monitor.hold(clusters, until);
    }
}

/// Progress nobody reads (a force-deleted cluster has no record left to show it on).
struct Unreported;

#[async_trait::async_trait]
impl Progress for Unreported {
    async fn report(&self, message: String) {
        tracing::debug!(%message, "force-deleted cluster");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use magnum_driver::{DriverRegistry, ResolutionError};

    use super::*;

    fn registry() -> DriverRegistry {
        DriverRegistry::new(vec![Arc::new(LocalDriver::new(Catalog::default()))])
    }

    #[test]
    fn default_catalog_serves_swarm_mode_templates() {
        let resolved = registry()
            .resolve(None, "local-node", ServerType::Vm, Coe::SwarmMode)
            .unwrap();
        assert_eq!(resolved.driver.name(), "local");
        assert_eq!(resolved.os_distro, "local");
        resolved
            .driver
            .validate_references(&References {
                flavor_id: Some("local.small"),
                master_flavor_id: Some("local.medium"),
                external_network_id: Some("local"),
                ..References::default()
            })
            .unwrap();
    }

    #[test]
    fn kubernetes_is_refused_with_what_is_missing() {
        let error = registry()
            .resolve(None, "local-node", ServerType::Vm, Coe::Kubernetes)
            .err()
            .unwrap();
        assert_eq!(
            error.to_string(),
            "Cluster type (vm, local, kubernetes) is not supported by any loaded cluster driver. \
             Loaded drivers support: local (vm, local, swarm-mode)."
        );
    }

    #[test]
    fn unknown_references_get_upstream_messages() {
        let registry = registry();
        let unknown_image = registry
            .resolve(None, "nope", ServerType::Vm, Coe::SwarmMode)
            .err()
            .unwrap();
        assert_eq!(unknown_image.to_string(), "Image nope could not be found.");
        let unknown_driver = registry
            .resolve(Some("heat"), "local-node", ServerType::Vm, Coe::SwarmMode)
            .err()
            .unwrap();
        assert!(matches!(unknown_driver, ResolutionError::UnknownDriver(_)));
        let driver = LocalDriver::new(Catalog::default());
        let cases = [
            (
                References {
                    flavor_id: Some("m1.huge"),
                    ..References::default()
                },
                "Unable to find flavor m1.huge.",
            ),
            (
                References {
                    external_network_id: Some("public"),
                    ..References::default()
                },
                "Unable to find external network public.",
            ),
            (
                References {
                    fixed_network: Some("private"),
                    ..References::default()
                },
                "Unable to find fixed network private.",
            ),
            (
                References {
                    fixed_subnet: Some("sub"),
                    ..References::default()
                },
                "Unable to find fixed subnet sub.",
            ),
            (
                References {
                    keypair: Some("mykey"),
                    ..References::default()
                },
                "Unable to find keypair mykey.",
            ),
        ];
        for (references, message) in cases {
            assert_eq!(
                driver
                    .validate_references(&references)
                    .unwrap_err()
                    .to_string(),
                message
            );
        }
    }

    #[test]
    fn root_disk_rule_uses_boot_volume_size() {
        let mut catalog = Catalog::default();
        catalog.flavors.push(CatalogFlavor {
            name: "diskless".to_owned(),
            id: None,
            vcpus: 1,
            ram_mib: 512,
            disk_gib: 0,
        });
        let driver = LocalDriver::new(catalog);
        let diskless = References {
            flavor_id: Some("diskless"),
            ..References::default()
        };
        assert_eq!(
            driver.validate_references(&diskless).unwrap_err(),
            ReferenceError::FlavorWithoutRootDisk
        );
        let with_volume = References {
            boot_volume_size: Some("10"),
            ..diskless
        };
        driver.validate_references(&with_volume).unwrap();
    }
}
