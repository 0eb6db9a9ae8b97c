//! The contract between magnum-rs and the drivers that build clusters.
//!
//! A driver says which cluster types it provides — (server type, OS distro, COE) — and
//! validates the references a template or cluster makes to things it owns: images, flavors,
//! networks and keypairs. The API resolves a template's driver through [`DriverRegistry`]
//! and never calls a driver for anything that changes the world; lifecycle actions are the
//! conductor's.
//!
//! Lifecycle is desired-state: the conductor hands the driver the whole cluster as it should
//! be ([`ClusterSpec`]) and the driver converges the world onto it, step by step, reporting
//! progress. Converging twice is harmless, so an operation interrupted by a crash is simply
//! run again.

use std::fmt;
use std::sync::Arc;

use magnum_domain::cluster::{Cluster, HealthStatus, NodeGroup};
use magnum_domain::cluster_template::{ClusterTemplate, Coe, ServerType};
use serde_json::{Map, Value};
use uuid::Uuid;

/// A kind of cluster a driver can build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterType {
    pub server_type: ServerType,
    pub os_distro: String,
    pub coe: Coe,
}

impl fmt::Display for ClusterType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "({}, {}, {})",
            self.server_type, self.os_distro, self.coe
        )
    }
}

/// A node image a driver can boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub id: String,
    pub name: String,
    pub os_distro: Option<String>,
}

/// What a template or cluster refers to, to be checked by its driver.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct References<'a> {
    pub flavor_id: Option<&'a str>,
    pub master_flavor_id: Option<&'a str>,
    pub external_network_id: Option<&'a str>,
    pub fixed_network: Option<&'a str>,
    pub fixed_subnet: Option<&'a str>,
    /// Checked for clusters only: upstream does not validate a template's keypair.
    pub keypair: Option<&'a str>,
    /// The `boot_volume_size` label, when the template or cluster sets one.
    pub boot_volume_size: Option<&'a str>,
}

/// A reference that does not resolve; the messages are upstream's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("Image {0} could not be found.")]
    ImageNotFound(String),
    #[error("Multiple images exist with same name '{0}'. Please use the image ID instead.")]
    ImageAmbiguous(String),
    #[error("Image {0} doesn't contain os_distro field.")]
    ImageWithoutOsDistro(String),
    #[error("Unable to find flavor {0}.")]
    FlavorNotFound(String),
    #[error("Flavor with zero root volume size is not supported when boot_volume_size is zero.")]
    FlavorWithoutRootDisk,
    #[error("Unable to find external network {0}.")]
    ExternalNetworkNotFound(String),
    #[error("Multiple external networks exist with same name '{0}'. Please use the external network ID instead.")]
    ExternalNetworkAmbiguous(String),
    #[error("Unable to find fixed network {0}.")]
    FixedNetworkNotFound(String),
    #[error("Multiple networks exist with same name '{0}'. Please use the network ID instead.")]
    FixedNetworkAmbiguous(String),
    #[error("Unable to find fixed subnet {0}.")]
    FixedSubnetNotFound(String),
    #[error("Multiple subnets exist with same name '{0}'. Please use the subnet ID instead.")]
    FixedSubnetAmbiguous(String),
    #[error("Unable to find keypair {0}.")]
    KeypairNotFound(String),
    #[error("Invalid boot_volume_size label {0:?}: expected an integer.")]
    InvalidBootVolumeSize(String),
    /// The driver cannot work on this host (what is missing, and how to get it).
    #[error("{0}")]
    DriverUnavailable(String),
    /// The cloud the references are looked up in does not answer now (retry later).
    #[error("{0}")]
    CloudUnavailable(String),
}

/// Why no driver can serve a template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolutionError {
    #[error("Cluster driver ({0}) not supported.")]
    UnknownDriver(String),
    #[error("Cluster type {requested} is not supported by any loaded cluster driver. Loaded drivers support: {supported}.")]
    ClusterTypeNotSupported {
        requested: ClusterType,
        supported: String,
    },
    #[error(transparent)]
    Reference(#[from] ReferenceError),
}

/// What a driver can be asked to do; drivers say which they support, and the API refuses
/// the others with a 400 before anything is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    CreateCluster,
    /// Change the worker count of a nodegroup (PATCH `node_count`, resize).
    ScaleWorkers,
    /// Change the master count.
    ScaleMasters,
    UpgradeCluster,
    DeleteCluster,
    CreateNodegroup,
    UpdateNodegroup,
    DeleteNodegroup,
    RotateCa,
    RotateCredentials,
}

impl Action {
    /// How a refusal names the action.
    pub fn describe(self) -> &'static str {
        match self {
            Action::CreateCluster => "Creating clusters",
            Action::ScaleWorkers => "Changing the number of worker nodes",
            Action::ScaleMasters => "Resizing the master nodegroup",
            Action::UpgradeCluster => "Upgrading clusters",
            Action::DeleteCluster => "Deleting clusters",
            Action::CreateNodegroup => "Creating nodegroups",
            Action::UpdateNodegroup => "Updating nodegroups",
            Action::DeleteNodegroup => "Deleting nodegroups",
            Action::RotateCa => "Rotating the CA certificate",
            Action::RotateCredentials => "Credential rotation",
        }
    }
}

/// A cluster as it should be: what the tenant asked for, stored.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub cluster: Cluster,
    pub template: ClusterTemplate,
    /// Nodegroups in creation order. Those in `DELETE_IN_PROGRESS` are to be torn down.
    pub nodegroups: Vec<NodeGroup>,
    /// The cluster's CA (certificate and key), to issue node server certificates from; after
    /// a rotation (`Action::RotateCa`) it is the new one, and certificates signed by the old
    /// one must stop being accepted.
    pub authority: Option<magnum_certs::CaMaterial>,
    /// The Keystone application credential delegated to the cluster in its owner's name (the
    /// newest, when a rotation added one), for drivers that [`Driver::delegates_credentials`].
    pub credential: Option<ClusterCredential>,
}

/// A Keystone application credential a cluster acts with.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterCredential {
    pub id: String,
    pub secret: String,
    /// The Keystone user it belongs to.
    pub user_id: String,
}

impl std::fmt::Debug for ClusterCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCredential")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

/// Revokes delegated credentials a cluster no longer uses (replaced by a rotation, or left by
/// a deleted cluster).
#[async_trait::async_trait]
pub trait CredentialRevoker: Send + Sync {
    /// Revoking one that is gone already succeeds.
    async fn revoke(&self, user_id: &str, id: &str) -> Result<(), String>;
}

/// The action being converged and its hints.
#[derive(Debug, Clone, Copy)]
pub struct Converge<'a> {
    pub action: Action,
    pub spec: &'a ClusterSpec,
    /// Nodes the tenant wants removed first when a nodegroup shrinks.
    pub nodes_to_remove: &'a [String],
    /// How many nodes an upgrade may replace at once.
    pub max_batch_size: Option<i64>,
}

/// What a driver observed of a cluster after converging it (the domain records it).
pub use magnum_domain::aggregate::{LiveState, Observed, ObservedNodeGroup};

/// Why a driver could not do what it was asked; messages are for tenants.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DriverError {
    #[error("{0}")]
    NotSupported(String),
    #[error("{0}")]
    Failed(String),
}

/// Where a driver reports what it is doing, in words a tenant understands.
#[async_trait::async_trait]
pub trait Progress: Send + Sync {
    async fn report(&self, message: String);

    /// Records a step of the change as a cluster event (a node started, a swarm joined),
    /// with the operation that made it. At most [`MAX_EVENTS_PER_OPERATION`] are kept of one
    /// operation.
    async fn event(&self, event: ClusterEvent) {
        let _ = event;
    }
}

/// The most events one operation records through [`Progress::event`]; later ones are
/// dropped (and logged), so that a driver in a loop cannot flood the events table.
pub const MAX_EVENTS_PER_OPERATION: usize = 500;

pub use magnum_domain::event::ClusterEvent;

/// What a driver tells the conductor without being asked.
#[derive(Debug, Clone, PartialEq)]
pub enum DriverEvent {
    /// What the driver sees of a cluster between operations (its endpoint, autoscaled sizes);
    /// sent when it changes.
    Live { cluster: Uuid, state: LiveState },
    Health {
        cluster: Uuid,
        status: HealthStatus,
        reason: Map<String, Value>,
    },
    /// A step seen between operations (a node found dead, restarted, replaced).
    Event { cluster: Uuid, event: ClusterEvent },
    /// A change the cluster needs, as the driver watching it sees (autoscaling from its
    /// workload, replacing a node it could not heal): the domain decides on it
    /// (`ClusterAggregate::decide`, under `policy`) and the conductor runs the operation.
    Proposal {
        cluster: Uuid,
        proposal: Proposal,
        policy: magnum_domain::automation::Policy,
    },
}

pub use magnum_domain::automation::{Policy, Proposal, Quorum};

/// A cluster driver. Implementations live in their own crates (`magnum-driver-local`, …).
#[async_trait::async_trait]
pub trait Driver: Send + Sync + 'static {
    /// The name templates record in their `driver` field.
    fn name(&self) -> &str;

    /// Whether clusters of this driver act with a Keystone application credential created
    /// in their owner's name when they are created (and again on `PATCH /v1/credentials`).
    fn delegates_credentials(&self) -> bool {
        false
    }

    /// Whether clusters of this driver may hold delegated credentials (given them when this
    /// or another process delegated), so that the conductor looks for them; drivers that never
    /// delegate spare every operation that query.
    fn may_hold_credentials(&self) -> bool {
        self.delegates_credentials()
    }

    /// The roles a delegated credential is given (none named: all of the owner's on the
    /// project).
    fn delegated_roles(&self) -> Vec<String> {
        Vec::new()
    }

    /// The cluster types this driver builds.
    fn provides(&self) -> Vec<ClusterType>;

    /// Looks an image up by id or name.
    fn find_image(&self, reference: &str) -> Result<Option<Image>, ReferenceError>;

    /// Whether references are looked up in the cloud as the caller sees it (then only the
    /// `_as` checks check anything).
    fn looks_up_in_cloud(&self) -> bool {
        false
    }

    /// [`Driver::find_image`] as the caller sees the cloud (their Keystone token), for
    /// drivers that look references up in the cloud rather than in their configuration.
    async fn find_image_as(
        &self,
        caller_token: Option<&str>,
        reference: &str,
    ) -> Result<Option<Image>, ReferenceError> {
        let _ = caller_token;
        self.find_image(reference)
    }

    /// [`Driver::validate_references`] as the caller sees the cloud.
    async fn validate_references_as(
        &self,
        caller_token: Option<&str>,
        references: &References<'_>,
    ) -> Result<(), ReferenceError> {
        let _ = caller_token;
        self.validate_references(references)
    }

    /// Checks every reference that is set. The default root-disk rule of upstream applies
    /// to flavors: without a positive `boot_volume_size`, a flavor needs a root disk.
    fn validate_references(&self, references: &References<'_>) -> Result<(), ReferenceError>;

    /// Whether the driver can do `action`.
    fn supports(&self, action: Action) -> bool {
        let _ = action;
        false
    }

    /// Upstream's default: an odd number of masters, at least one.
    fn check_master_count(&self, master_count: i64) -> Result<(), String> {
        if master_count >= 1 && master_count % 2 == 1 {
            Ok(())
        } else {
            Err(format!(
                "master nodegroup size of {master_count} is invalid, size cannot be an even number."
            ))
        }
    }

    /// Whether the driver builds nodes for `project_id`; the reason when it does not.
    fn permits_project(&self, project_id: &str) -> Result<(), String> {
        let _ = project_id;
        Ok(())
    }

    /// How many more nodes this driver can run, when it is bounded (a single host is).
    fn nodes_available(&self) -> Option<i64> {
        None
    }

    /// Whether clusters of `current` can be moved to `new`; the reason when not.
    fn check_upgrade(
        &self,
        current: &ClusterTemplate,
        new: &ClusterTemplate,
    ) -> Result<(), String> {
        let _ = (current, new);
        Ok(())
    }

    /// An admin's forced delete takes a cluster's records away at once, without a delete
    /// through the driver: the driver starts tearing down what it made and finishes on its
    /// own later (nothing waits on it). The default has nothing to release.
    async fn abandon(&self, cluster: &Cluster) -> Result<(), DriverError> {
        let _ = cluster;
        Ok(())
    }

    /// Makes the world match `request.spec`, idempotently.
    async fn converge(
        &self,
        request: Converge<'_>,
        progress: &dyn Progress,
    ) -> Result<Observed, DriverError> {
        let _ = progress;
        Err(DriverError::NotSupported(format!(
            "{} is not supported by the {} driver.",
            request.action.describe(),
            self.name()
        )))
    }

    /// Removes everything the cluster has in the world, idempotently: deleting what is
    /// already gone succeeds.
    async fn delete(&self, spec: &ClusterSpec, progress: &dyn Progress) -> Result<(), DriverError> {
        let _ = (spec, progress);
        Err(DriverError::NotSupported(format!(
            "Deleting clusters is not supported by the {} driver.",
            self.name()
        )))
    }

    /// Events the driver pushes (health changes), when it has any.
    fn events(&self) -> Option<tokio::sync::broadcast::Receiver<DriverEvent>> {
        None
    }

    /// Clusters whose health this driver can watch (and heal) from this process, when its
    /// watching must be done by one conductor at a time (the local driver: the clusters with
    /// nodes on this host). The conductor takes a monitor lease on each and tells the driver
    /// which it holds with [`Driver::monitor_only`]. `None`: the driver needs no leases (what
    /// it pushes may harmlessly come twice).
    async fn monitorable_clusters(&self) -> Option<Vec<Uuid>> {
        None
    }

    /// A cluster this driver reported monitorable (it has things on this host) whose deletion
    /// is recorded and whose records are gone: release whatever of it is left (a forced
    /// delete whose teardown died with its process). Called by the conductor holding the
    /// cluster's monitor lease, again until the cluster is no longer monitorable; must be
    /// idempotent. The default has nothing to release.
    async fn release_deleted(&self, cluster: Uuid) -> Result<(), DriverError> {
        let _ = cluster;
        Ok(())
    }

    /// The clusters whose monitor leases this process holds, until `until`: the driver
    /// watches and heals those only, and none once `until` has passed without a newer call
    /// (a conductor that can no longer renew must not act beside the next holder).
    fn monitor_only(&self, clusters: std::collections::HashSet<Uuid>, until: std::time::Instant) {
        let _ = (clusters, until);
    }
}

/// The outcome of resolving a template's driver.
#[derive(Clone)]
pub struct Resolved {
    pub driver: Arc<dyn Driver>,
    pub image: Image,
    pub os_distro: String,
}

/// The enabled drivers, in name order.
#[derive(Clone, Default)]
pub struct DriverRegistry {
    drivers: Vec<Arc<dyn Driver>>,
}

impl DriverRegistry {
    pub fn new(mut drivers: Vec<Arc<dyn Driver>>) -> Self {
        drivers.sort_by(|a, b| a.name().cmp(b.name()));
        Self { drivers }
    }

    pub fn drivers(&self) -> &[Arc<dyn Driver>] {
        &self.drivers
    }

    pub fn by_name(&self, name: &str) -> Option<Arc<dyn Driver>> {
        self.drivers
            .iter()
            .find(|driver| driver.name() == name)
            .cloned()
    }

    /// Upstream's resolution: the explicit driver if one is named, otherwise the driver whose
    /// catalog holds the image; the image's OS distro, the server type and the COE must then
    /// be a cluster type some enabled driver provides.
    pub fn resolve(
        &self,
        requested_driver: Option<&str>,
        image_reference: &str,
        server_type: ServerType,
        coe: Coe,
    ) -> Result<Resolved, ResolutionError> {
        let candidates = self.candidates(requested_driver)?;
        let mut found = None;
        for driver in &candidates {
            if let Some(image) = driver.find_image(image_reference)? {
                found = Some((driver.clone(), image));
                break;
            }
        }
        self.resolution(candidates, found, image_reference, server_type, coe)
    }

    /// [`DriverRegistry::resolve`] with images looked up as the caller (whose Keystone
    /// token drivers that ask the cloud use: a tenant names only images it can see).
    pub async fn resolve_as(
        &self,
        caller_token: Option<&str>,
        requested_driver: Option<&str>,
        image_reference: &str,
        server_type: ServerType,
        coe: Coe,
    ) -> Result<Resolved, ResolutionError> {
        let candidates = self.candidates(requested_driver)?;
        let mut found = None;
        for driver in &candidates {
            if let Some(image) = driver.find_image_as(caller_token, image_reference).await? {
                found = Some((driver.clone(), image));
                break;
            }
        }
        self.resolution(candidates, found, image_reference, server_type, coe)
    }

    /// The named driver, or every enabled one.
    fn candidates(
        &self,
        requested_driver: Option<&str>,
    ) -> Result<Vec<Arc<dyn Driver>>, ResolutionError> {
        Ok(match requested_driver {
            Some(name) => vec![self
                .by_name(name)
                .ok_or_else(|| ResolutionError::UnknownDriver(name.to_owned()))?],
            None => self.drivers.clone(),
        })
    }

    fn resolution(
        &self,
        candidates: Vec<Arc<dyn Driver>>,
        found: Option<(Arc<dyn Driver>, Image)>,
        image_reference: &str,
        server_type: ServerType,
        coe: Coe,
    ) -> Result<Resolved, ResolutionError> {
        let (owner, image) =
            found.ok_or_else(|| ReferenceError::ImageNotFound(image_reference.to_owned()))?;
        let os_distro = image
            .os_distro
            .clone()
            .ok_or_else(|| ReferenceError::ImageWithoutOsDistro(image_reference.to_owned()))?;
        let requested = ClusterType {
            server_type,
            os_distro: os_distro.clone(),
            coe,
        };
        let provider = std::iter::once(&owner)
            .chain(candidates.iter())
            .find(|driver| driver.provides().contains(&requested))
            .cloned();
        match provider {
            Some(driver) => Ok(Resolved {
                driver,
                image,
                os_distro,
            }),
            None => Err(ResolutionError::ClusterTypeNotSupported {
                requested,
                supported: self.supported_summary(),
            }),
        }
    }

    fn supported_summary(&self) -> String {
        let entries: Vec<String> = self
            .drivers
            .iter()
            .flat_map(|driver| {
                driver
                    .provides()
                    .into_iter()
                    .map(move |cluster_type| format!("{} {cluster_type}", driver.name()))
            })
            .collect();
        if entries.is_empty() {
            "none".to_owned()
        } else {
            entries.join(", ")
        }
    }
}
