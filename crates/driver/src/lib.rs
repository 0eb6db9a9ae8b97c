//! The contract between magnum-rs and the drivers that build clusters.
//!
//! A driver says which cluster types it provides — (server type, OS distro, COE) — and
//! validates the references a template or cluster makes to things it owns: images, flavors,
//! networks and keypairs. The API resolves a template's driver through [`DriverRegistry`]
//! and never calls a driver for anything that changes the world; lifecycle actions are the
//! conductor's.

use std::fmt;
use std::sync::Arc;

use magnum_domain::cluster_template::{Coe, ServerType};

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
    #[error("Unable to find fixed subnet {0}.")]
    FixedSubnetNotFound(String),
    #[error("Unable to find keypair {0}.")]
    KeypairNotFound(String),
    #[error("Invalid boot_volume_size label {0:?}: expected an integer.")]
    InvalidBootVolumeSize(String),
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

/// A cluster driver. Implementations live in their own crates (`magnum-driver-local`, …).
pub trait Driver: Send + Sync + 'static {
    /// The name templates record in their `driver` field.
    fn name(&self) -> &str;

    /// The cluster types this driver builds.
    fn provides(&self) -> Vec<ClusterType>;

    /// Looks an image up by id or name.
    fn find_image(&self, reference: &str) -> Result<Option<Image>, ReferenceError>;

    /// Checks every reference that is set. The default root-disk rule of upstream applies
    /// to flavors: without a positive `boot_volume_size`, a flavor needs a root disk.
    fn validate_references(&self, references: &References<'_>) -> Result<(), ReferenceError>;
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
        let candidates: Vec<Arc<dyn Driver>> = match requested_driver {
            Some(name) => vec![self
                .by_name(name)
                .ok_or_else(|| ResolutionError::UnknownDriver(name.to_owned()))?],
            None => self.drivers.clone(),
        };
        let mut found = None;
        for driver in &candidates {
            if let Some(image) = driver.find_image(image_reference)? {
                found = Some((driver.clone(), image));
                break;
            }
        }
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
