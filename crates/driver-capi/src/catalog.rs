//! The OpenStack resources templates may refer to, from the configuration: for clouds whose
//! Glance, Nova and Neutron the driver is not given (and for tests). A reference is an id or
//! a unique name, as upstream resolves it.

use magnum_driver::{Image, ReferenceError, References};
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogImage {
    /// Glance image uuid: CAPO boots machines by id.
    pub id: String,
    pub name: String,
    pub os_distro: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogFlavor {
    pub id: String,
    pub name: String,
    /// Root disk in GiB; 0 means the flavor boots only from a volume.
    #[serde(default)]
    pub disk_gib: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogNetwork {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Catalog {
    pub images: Vec<CatalogImage>,
    pub flavors: Vec<CatalogFlavor>,
    pub external_networks: Vec<CatalogNetwork>,
    pub fixed_networks: Vec<CatalogNetwork>,
    pub fixed_subnets: Vec<CatalogNetwork>,
    pub keypairs: Vec<String>,
}

/// By id first, then by unique name.
fn find<'a, T>(
    items: &'a [T],
    reference: &str,
    id: impl Fn(&T) -> &str,
    name: impl Fn(&T) -> &str,
) -> Result<Option<&'a T>, ()> {
    if let Some(item) = items.iter().find(|item| id(item) == reference) {
        return Ok(Some(item));
    }
    let named: Vec<&T> = items
        .iter()
        .filter(|item| name(item) == reference)
        .collect();
    match named.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one)),
        _ => Err(()),
    }
}

impl Catalog {
    pub fn image(&self, reference: &str) -> Result<Option<&CatalogImage>, ReferenceError> {
        find(&self.images, reference, |i| &i.id, |i| &i.name)
            .map_err(|()| ReferenceError::ImageAmbiguous(reference.to_owned()))
    }

    pub fn find_image(&self, reference: &str) -> Result<Option<Image>, ReferenceError> {
        Ok(self.image(reference)?.map(|image| Image {
            id: image.id.clone(),
            name: image.name.clone(),
            os_distro: image.os_distro.clone(),
        }))
    }

    pub fn flavor(&self, reference: &str) -> Option<&CatalogFlavor> {
        find(&self.flavors, reference, |f| &f.id, |f| &f.name)
            .ok()
            .flatten()
    }

    pub fn external_network(
        &self,
        reference: &str,
    ) -> Result<Option<&CatalogNetwork>, ReferenceError> {
        find(&self.external_networks, reference, |n| &n.id, |n| &n.name)
            .map_err(|()| ReferenceError::ExternalNetworkAmbiguous(reference.to_owned()))
    }

    pub fn fixed_network(
        &self,
        reference: &str,
    ) -> Result<Option<&CatalogNetwork>, ReferenceError> {
        find(&self.fixed_networks, reference, |n| &n.id, |n| &n.name)
            .map_err(|()| ReferenceError::FixedNetworkAmbiguous(reference.to_owned()))
    }

    pub fn fixed_subnet(&self, reference: &str) -> Result<Option<&CatalogNetwork>, ReferenceError> {
        find(&self.fixed_subnets, reference, |n| &n.id, |n| &n.name)
            .map_err(|()| ReferenceError::FixedSubnetAmbiguous(reference.to_owned()))
    }

    /// Whether the configuration lists nothing: references are then looked up in the cloud.
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
            && self.flavors.is_empty()
            && self.external_networks.is_empty()
            && self.fixed_networks.is_empty()
            && self.fixed_subnets.is_empty()
            && self.keypairs.is_empty()
    }

    /// Upstream's checks of a template's or cluster's references, with its messages.
    pub fn validate(&self, references: &References<'_>) -> Result<(), ReferenceError> {
        ready(validate(self, references))
    }
}

/// Where references are looked up: the configured catalog, or the cloud's Glance, Nova and
/// Neutron (`crate::lookup`). A reference is an id or a unique name.
#[async_trait::async_trait]
pub trait Lookups: Send + Sync {
    async fn image(&self, reference: &str) -> Result<Option<CatalogImage>, ReferenceError>;
    async fn flavor(&self, reference: &str) -> Result<Option<CatalogFlavor>, ReferenceError>;
    async fn external_network(
        &self,
        reference: &str,
    ) -> Result<Option<CatalogNetwork>, ReferenceError>;
    async fn fixed_network(
        &self,
        reference: &str,
    ) -> Result<Option<CatalogNetwork>, ReferenceError>;
    async fn fixed_subnet(&self, reference: &str)
        -> Result<Option<CatalogNetwork>, ReferenceError>;
    async fn has_keypair(&self, name: &str) -> Result<bool, ReferenceError>;
}

#[async_trait::async_trait]
impl Lookups for Catalog {
    async fn image(&self, reference: &str) -> Result<Option<CatalogImage>, ReferenceError> {
        Catalog::image(self, reference).map(|found| found.cloned())
    }
    async fn flavor(&self, reference: &str) -> Result<Option<CatalogFlavor>, ReferenceError> {
        Ok(Catalog::flavor(self, reference).cloned())
    }
    async fn external_network(
        &self,
        reference: &str,
    ) -> Result<Option<CatalogNetwork>, ReferenceError> {
        Catalog::external_network(self, reference).map(|found| found.cloned())
    }
    async fn fixed_network(
        &self,
        reference: &str,
    ) -> Result<Option<CatalogNetwork>, ReferenceError> {
        Catalog::fixed_network(self, reference).map(|found| found.cloned())
    }
    async fn fixed_subnet(
        &self,
        reference: &str,
    ) -> Result<Option<CatalogNetwork>, ReferenceError> {
        Catalog::fixed_subnet(self, reference).map(|found| found.cloned())
    }
    async fn has_keypair(&self, name: &str) -> Result<bool, ReferenceError> {
        Ok(self.keypairs.iter().any(|known| known == name))
    }
}

/// The value of a future that never waits: the catalog's lookups answer at once, so its
/// synchronous callers share [`validate`] with the cloud's asynchronous ones.
fn ready<T>(future: impl std::future::Future<Output = T>) -> T {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
    {
        std::task::Poll::Ready(value) => value,
        std::task::Poll::Pending => unreachable!("a catalog lookup never waits"),
    }
}

/// Upstream's checks of a template's or cluster's references, with its messages, against
/// `lookups`.
pub async fn validate(
    lookups: &dyn Lookups,
    references: &References<'_>,
) -> Result<(), ReferenceError> {
    let boot_volume_size = match references.boot_volume_size {
        Some(text) => text
            .trim()
            .parse::<i64>()
            .map_err(|_| ReferenceError::InvalidBootVolumeSize(text.to_owned()))?,
        None => 0,
    };
    for reference in [references.flavor_id, references.master_flavor_id]
        .into_iter()
        .flatten()
    {
        let flavor = lookups
            .flavor(reference)
            .await?
            .ok_or_else(|| ReferenceError::FlavorNotFound(reference.to_owned()))?;
        if flavor.disk_gib == 0 && boot_volume_size <= 0 {
            return Err(ReferenceError::FlavorWithoutRootDisk);
        }
    }
    if let Some(reference) = references.external_network_id {
        lookups
            .external_network(reference)
            .await?
            .ok_or_else(|| ReferenceError::ExternalNetworkNotFound(reference.to_owned()))?;
    }
    if let Some(reference) = references.fixed_network {
        lookups
            .fixed_network(reference)
            .await?
            .ok_or_else(|| ReferenceError::FixedNetworkNotFound(reference.to_owned()))?;
    }
    if let Some(reference) = references.fixed_subnet {
        lookups
            .fixed_subnet(reference)
            .await?
            .ok_or_else(|| ReferenceError::FixedSubnetNotFound(reference.to_owned()))?;
    }
    if let Some(keypair) = references.keypair {
        if !lookups.has_keypair(keypair).await? {
            return Err(ReferenceError::KeypairNotFound(keypair.to_owned()));
        }
    }
    Ok(())
}
