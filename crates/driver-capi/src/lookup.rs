//! References looked up in the cloud itself: Glance, Nova and Neutron found in the catalog
//! of a token — the API's caller's (so that a tenant can name only what it can see) or the
//! cluster's own credential's at converge time (what CAPO will act with). Answers as the
//! configured catalog gives them; a service that is away is `DriverUnavailable`.

use magnum_driver::ReferenceError;
use serde_json::Value;

use crate::catalog::{CatalogFlavor, CatalogImage, CatalogNetwork, Lookups};
use crate::openstack::{Cloud, CloudError, Session};

/// Most entries one list request asks for (a name matches a handful; flavors are listed).
const LIST_LIMIT: usize = 1000;
/// How long all the lookups of one check (one request, or one converge's resolution) may
/// take together, whatever each request's own 15 s.
const LOOKUPS_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

pub struct CloudLookups<'a> {
    cloud: &'a Cloud,
    session: Session,
    deadline: tokio::time::Instant,
}

fn unavailable(error: CloudError) -> ReferenceError {
    match error {
        CloudError::Unavailable(reason) => ReferenceError::CloudUnavailable(format!(
            "The cloud cannot be asked about this reference now: {reason}"
        )),
        CloudError::Refused(reason) => ReferenceError::DriverUnavailable(format!(
            "The cloud refused to look this reference up: {reason}"
        )),
    }
}

impl<'a> CloudLookups<'a> {
    pub fn new(cloud: &'a Cloud, session: Session) -> Self {
        Self {
            cloud,
            session,
            deadline: tokio::time::Instant::now() + LOOKUPS_DEADLINE,
        }
    }

    /// Lookups as the holder of `token` (the API's caller) sees the cloud.
    pub async fn of_token(cloud: &'a Cloud, token: &str) -> Result<Self, ReferenceError> {
        let session = cloud.session_of_token(token).await.map_err(unavailable)?;
        Ok(Self::new(cloud, session))
    }

    /// Lookups as a cluster's credential sees the cloud (what CAPO will act with).
    pub async fn of_credential(
        cloud: &'a Cloud,
        credential: &crate::render::ApplicationCredential,
    ) -> Result<Self, ReferenceError> {
        let session = cloud.authenticate(credential).await.map_err(unavailable)?;
        Ok(Self::new(cloud, session))
    }

    fn endpoint(&self, service_type: &str, path: &str) -> Result<reqwest::Url, ReferenceError> {
        let base = self
            .cloud
            .endpoint(&self.session, service_type)
            .ok_or_else(|| {
                ReferenceError::DriverUnavailable(format!(
                "The cloud's catalog has no {service_type} endpoint for this region and interface."
            ))
            })?;
        reqwest::Url::parse(&format!("{base}{path}")).map_err(|error| {
            ReferenceError::DriverUnavailable(format!("The {service_type} endpoint: {error}"))
        })
    }

    async fn get(&self, url: reqwest::Url, service: &str) -> Result<Option<Value>, ReferenceError> {
        tokio::time::timeout_at(self.deadline, self.cloud.get(&self.session, url, service))
            .await
            .map_err(|_| {
                ReferenceError::CloudUnavailable(format!(
                    "The cloud took more than {} s to answer about the references.",
                    LOOKUPS_DEADLINE.as_secs()
                ))
            })?
            .map_err(unavailable)
    }

    /// `GET {service}{path}?query…`, the list under `key`.
    async fn list(
        &self,
        service_type: &str,
        service: &str,
        path: &str,
        query: &[(&str, &str)],
        key: &str,
    ) -> Result<Vec<Value>, ReferenceError> {
        let mut url = self.endpoint(service_type, path)?;
        url.query_pairs_mut()
            .extend_pairs(query)
            .append_pair("limit", &LIST_LIMIT.to_string());
        // A list that is not there is a wrong endpoint, not an empty answer.
        let body = self.get(url, service).await?;
        body.as_ref()
            .and_then(|body| body[key].as_array().cloned())
            .ok_or_else(|| {
                ReferenceError::CloudUnavailable(format!(
                    "{service} answered {path} without a list of {key}: is the catalog's {service_type} endpoint right?"
                ))
            })
    }

    /// A network or subnet by id, else by unique name; several of one name are `ambiguous`.
    async fn neutron(
        &self,
        collection: &str,
        reference: &str,
        external: bool,
        ambiguous: fn(String) -> ReferenceError,
    ) -> Result<Option<CatalogNetwork>, ReferenceError> {
        let path = format!("/v2.0/{collection}");
        let mut filters = vec![];
        if external {
            filters.push(("router:external", "true"));
        }
        let own = self.session.project_id();
        for key in ["id", "name"] {
            let mut query = filters.clone();
            query.push((key, reference));
            let found = self
                .list("network", "Neutron", &path, &query, collection)
                .await?;
            let found: Vec<CatalogNetwork> = found
                .iter()
                .filter(|item| item[key].as_str() == Some(reference))
                .filter(|item| !external || item["router:external"] == true)
                // An admin's token lists every project's: only its own, shared or external
                // ones are the caller's to name.
                .filter(|item| {
                    item["project_id"].as_str() == Some(own)
                        || item["tenant_id"].as_str() == Some(own)
                        || item["shared"] == true
                        || item["router:external"] == true
                })
                .filter_map(|item| {
                    Some(CatalogNetwork {
                        id: item["id"].as_str()?.to_owned(),
                        name: item["name"].as_str().unwrap_or_default().to_owned(),
                    })
                })
                .collect();
            match found.as_slice() {
                [] => continue,
                [one] => return Ok(Some(one.clone())),
                _ => return Err(ambiguous(reference.to_owned())),
            }
        }
        Ok(None)
    }
}

fn image_of(value: &Value) -> Option<CatalogImage> {
    Some(CatalogImage {
        id: value["id"].as_str()?.to_owned(),
        name: value["name"].as_str().unwrap_or_default().to_owned(),
        os_distro: value["os_distro"].as_str().map(str::to_owned),
    })
}

fn flavor_of(value: &Value) -> Option<CatalogFlavor> {
    Some(CatalogFlavor {
        id: value["id"].as_str()?.to_owned(),
        name: value["name"].as_str().unwrap_or_default().to_owned(),
        disk_gib: value["disk"].as_u64().unwrap_or(0),
    })
}

/// Whether a reference may name a path segment: "." and ".." (encoded or not, URL parsing
/// reads them as steps up) name nothing in the cloud.
fn fits_a_path(reference: &str) -> bool {
    !reference.is_empty() && reference.chars().any(|c| c != '.')
}

/// Path segments are ids and names of the caller's choosing: never more than one segment.
fn segment(text: &str) -> String {
    text.bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
                (byte as char).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

#[async_trait::async_trait]
impl Lookups for CloudLookups<'_> {
    async fn image(&self, reference: &str) -> Result<Option<CatalogImage>, ReferenceError> {
        if uuid::Uuid::parse_str(reference).is_ok() {
            let url = self.endpoint("image", &format!("/v2/images/{}", segment(reference)))?;
            let by_id = self
                .get(url, "Glance")
                .await?
                .as_ref()
                .and_then(image_of)
                .filter(|image| image.id == reference);
            if by_id.is_some() {
                return Ok(by_id);
            }
        }
        let own = self.session.project_id();
        let named: Vec<CatalogImage> = self
            .list(
                "image",
                "Glance",
                "/v2/images",
                &[("name", reference)],
                "images",
            )
            .await?
            .iter()
            .filter(|image| image["name"].as_str() == Some(reference))
            // An admin's token lists every project's images: another project's private one
            // of the same name must neither be chosen nor make the name ambiguous.
            .filter(|image| {
                image["owner"].as_str() == Some(own)
                    || matches!(
                        image["visibility"].as_str(),
                        Some("public" | "community" | "shared")
                    )
            })
            .filter_map(image_of)
            .collect();
        match named.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one.clone())),
            _ => Err(ReferenceError::ImageAmbiguous(reference.to_owned())),
        }
    }

    async fn flavor(&self, reference: &str) -> Result<Option<CatalogFlavor>, ReferenceError> {
        if fits_a_path(reference) {
            let url = self.endpoint("compute", &format!("/flavors/{}", segment(reference)))?;
            if let Some(flavor) = self
                .get(url, "Nova")
                .await?
                .as_ref()
                .and_then(|body| flavor_of(&body["flavor"]))
            {
                return Ok(Some(flavor));
            }
        }
        // Nova filters flavors by nothing useful here: the names are compared to the list.
        let flavors = self
            .list("compute", "Nova", "/flavors/detail", &[], "flavors")
            .await?;
        let named: Vec<CatalogFlavor> = flavors
            .iter()
            .filter(|flavor| flavor["name"].as_str() == Some(reference))
            .filter_map(flavor_of)
            .collect();
        Ok(match named.as_slice() {
            [one] => Some(one.clone()),
            _ => None,
        })
    }

    async fn external_network(
        &self,
        reference: &str,
    ) -> Result<Option<CatalogNetwork>, ReferenceError> {
        self.neutron(
            "networks",
            reference,
            true,
            ReferenceError::ExternalNetworkAmbiguous,
        )
        .await
    }

    async fn fixed_network(
        &self,
        reference: &str,
    ) -> Result<Option<CatalogNetwork>, ReferenceError> {
        self.neutron(
            "networks",
            reference,
            false,
            ReferenceError::FixedNetworkAmbiguous,
        )
        .await
    }

    async fn fixed_subnet(
        &self,
        reference: &str,
    ) -> Result<Option<CatalogNetwork>, ReferenceError> {
        self.neutron(
            "subnets",
            reference,
            false,
            ReferenceError::FixedSubnetAmbiguous,
        )
        .await
    }

    async fn has_keypair(&self, name: &str) -> Result<bool, ReferenceError> {
        if !fits_a_path(name) {
            return Ok(false);
        }
        let url = self.endpoint("compute", &format!("/os-keypairs/{}", segment(name)))?;
        Ok(self
            .get(url, "Nova")
            .await?
            .is_some_and(|body| body["keypair"]["name"].as_str() == Some(name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_stay_one_path_segment() {
        assert_eq!(segment("m1.large"), "m1.large");
        assert_eq!(segment("a/b?c#d e"), "a%2Fb%3Fc%23d%20e");
        for climbing in ["", ".", "..", "..."] {
            assert!(!fits_a_path(climbing), "{climbing:?}");
        }
        assert!(fits_a_path(".a"));
    }
}
