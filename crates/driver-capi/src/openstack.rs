//! The cloud as a cluster's own credential reaches it: Keystone (application credential
//! authentication and the catalog that comes with the token) and Octavia, to remove the load
//! balancers the cluster's cloud provider made for its `LoadBalancer` Services before the
//! cluster is deleted (CAPO cannot delete a network with load balancers on it).

use std::time::Duration;

use serde_json::{json, Value};

use crate::render::ApplicationCredential;
use crate::settings::CloudSettings;

/// Every request to the cloud gives up after this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// The most of a response body read (a catalog or a page of load balancers).
const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;
/// Load balancers asked for per page, and the most pages followed (Octavia pages lists).
const PAGE_SIZE: usize = 500;
const MAX_PAGES: usize = 100;

/// Why the cloud could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloudError {
    /// Away, overloaded or timed out: worth another try.
    #[error("{0}")]
    Unavailable(String),
    /// Refused for what was asked (a revoked credential, a forbidden call).
    #[error("{0}")]
    Refused(String),
}

/// A token, the project it is scoped to and the catalog it came with.
pub struct Session {
    token: String,
    project_id: String,
    catalog: Value,
}

impl Session {
    /// The project the token is scoped to.
    pub fn project_id(&self) -> &str {
        &self.project_id
    }
}

/// A load balancer as Octavia lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadBalancer {
    pub id: String,
    pub name: String,
    pub provisioning_status: String,
}

/// The names the OpenStack cloud controller manager gives the load balancers of a cluster
/// (`kube_service_<cluster>_<namespace>_<service>`; the driver sets `<cluster>` to the CAPI
/// cluster's name, which no other cluster's name extends).
pub fn load_balancer_prefix(cluster_name: &str) -> String {
    format!("kube_service_{cluster_name}_")
}

/// The application credential in a `clouds.yaml` the driver rendered (values are JSON-quoted
/// strings on their own lines).
pub fn credential_of_clouds_yaml(text: &str) -> Option<ApplicationCredential> {
    let value = |key: &str| {
        text.lines().find_map(|line| {
            let rest = line.trim().strip_prefix(key)?.strip_prefix(':')?;
            serde_json::from_str::<String>(rest.trim()).ok()
        })
    };
    Some(ApplicationCredential {
        id: value("application_credential_id")?,
        secret: value("application_credential_secret")?,
    })
}

pub struct Cloud {
    http: reqwest::Client,
    settings: CloudSettings,
}

impl Cloud {
    pub fn new(settings: &CloudSettings) -> Result<Self, String> {
        let mut builder = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(bundle) = &settings.ca_bundle {
            for certificate in reqwest::Certificate::from_pem_bundle(bundle.as_bytes())
                .map_err(|error| format!("the cloud's CA bundle: {error}"))?
            {
                builder = builder.add_root_certificate(certificate);
            }
        }
        Ok(Self {
            http: builder.build().map_err(|error| error.to_string())?,
            settings: settings.clone(),
        })
    }

    /// Logs in with the application credential.
    pub async fn authenticate(
        &self,
        credential: &ApplicationCredential,
    ) -> Result<Session, CloudError> {
        let body = json!({"auth": {"identity": {
            "methods": ["application_credential"],
            "application_credential": {"id": credential.id, "secret": credential.secret}}}});
        let url = format!(
            "{}/auth/tokens",
            self.settings.auth_url.trim_end_matches('/')
        );
        let response = self
            .http
            .post(&url)
            .json(&body)
            .send()
            .await
            .map_err(|error| CloudError::Unavailable(format!("Keystone: {error}")))?;
        let status = response.status();
        let token = response
            .headers()
            .get("X-Subject-Token")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let body = read_json(response, "Keystone").await;
        if !status.is_success() {
            return Err(classify(status, "Keystone", &body.unwrap_or_default()));
        }
        let body = body?;
        let token = token.ok_or_else(|| {
            CloudError::Unavailable("Keystone answered without a token".to_owned())
        })?;
        let project_id = body["token"]["project"]["id"]
            .as_str()
            .filter(|id| !id.is_empty())
            .ok_or_else(|| {
                CloudError::Refused("the credential's token is not scoped to a project".to_owned())
            })?
            .to_owned();
        Ok(Session {
            token,
            project_id,
            catalog: body["token"]["catalog"].clone(),
        })
    }

    /// The session of a token someone else logged in for (the API's caller): Keystone
    /// validates it, with its own token, and gives its project and catalog.
    pub async fn session_of_token(&self, token: &str) -> Result<Session, CloudError> {
        let url = format!(
            "{}/auth/tokens",
            self.settings.auth_url.trim_end_matches('/')
        );
        let response = self
            .http
            .get(&url)
            .header("X-Auth-Token", token)
            .header("X-Subject-Token", token)
            .send()
            .await
            .map_err(|error| CloudError::Unavailable(format!("Keystone: {error}")))?;
        let status = response.status();
        let body = read_json(response, "Keystone").await;
        if !status.is_success() {
            return Err(classify(status, "Keystone", &body.unwrap_or_default()));
        }
        let body = body?;
        let project_id = body["token"]["project"]["id"]
            .as_str()
            .filter(|id| !id.is_empty())
            .ok_or_else(|| CloudError::Refused("the token is not scoped to a project".to_owned()))?
            .to_owned();
        Ok(Session {
            token: token.to_owned(),
            project_id,
            catalog: body["token"]["catalog"].clone(),
        })
    }

    /// GET `url` with the session's token: `None` for a 404.
    pub async fn get(
        &self,
        session: &Session,
        url: reqwest::Url,
        service: &str,
    ) -> Result<Option<Value>, CloudError> {
        let response = self
            .http
            .get(url)
            .header("X-Auth-Token", &session.token)
            .header("Accept", "application/json")
            .send()
            .await
            .map_err(|error| CloudError::Unavailable(format!("{service}: {error}")))?;
        let status = response.status();
        if status == 404 {
            return Ok(None);
        }
        let body = read_json(response, service).await;
        if !status.is_success() {
            return Err(classify(status, service, &body.unwrap_or_default()));
        }
        body.map(Some)
    }

    /// The URL of `service_type` in the session's catalog, for the configured interface and
    /// region (any region when none is configured).
    pub fn endpoint(&self, session: &Session, service_type: &str) -> Option<String> {
        let region = self.settings.region_name.as_deref();
        session
            .catalog
            .as_array()?
            .iter()
            .filter(|service| service["type"].as_str() == Some(service_type))
            .flat_map(|service| service["endpoints"].as_array().cloned().unwrap_or_default())
            .find(|endpoint| {
                endpoint["interface"].as_str() == Some(self.settings.interface.as_str())
                    && region.is_none_or(|region| {
                        endpoint["region_id"].as_str() == Some(region)
                            || endpoint["region"].as_str() == Some(region)
                    })
            })
            .and_then(|endpoint| {
                endpoint["url"]
                    .as_str()
                    .map(|url| url.trim_end_matches('/').to_owned())
            })
    }

    /// The load balancers of the credential's project whose names start with `prefix`: asked
    /// for by project (a credential with the admin role would otherwise see every project's)
    /// and checked again, every page followed.
    pub async fn load_balancers(
        &self,
        session: &Session,
        endpoint: &str,
        prefix: &str,
    ) -> Result<Vec<LoadBalancer>, CloudError> {
        let mut found = Vec::new();
        let mut url = reqwest::Url::parse(&format!("{endpoint}/v2/lbaas/loadbalancers"))
            .map_err(|error| CloudError::Refused(format!("Octavia's endpoint: {error}")))?;
        url.query_pairs_mut()
            .append_pair("project_id", &session.project_id)
            .append_pair("limit", &PAGE_SIZE.to_string());
        for _ in 0..MAX_PAGES {
            let response = self
                .http
                .get(url.clone())
                .header("X-Auth-Token", &session.token)
                .send()
                .await
                .map_err(|error| CloudError::Unavailable(format!("Octavia: {error}")))?;
            let status = response.status();
            let body = read_json(response, "Octavia").await;
            if !status.is_success() {
                return Err(classify(status, "Octavia", &body.unwrap_or_default()));
            }
            let body = body?;
            found.extend(
                body["loadbalancers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|lb| lb["project_id"].as_str() == Some(session.project_id.as_str()))
                    .filter_map(|lb| {
                        Some(LoadBalancer {
                            id: lb["id"].as_str()?.to_owned(),
                            name: lb["name"].as_str()?.to_owned(),
                            provisioning_status: lb["provisioning_status"]
                                .as_str()
                                .unwrap_or_default()
                                .to_owned(),
                        })
                    })
                    .filter(|lb| lb.name.starts_with(prefix)),
            );
            let next = body["loadbalancers_links"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|link| link["rel"] == "next")
                .and_then(|link| link["href"].as_str());
            let Some(next) = next else {
                return Ok(found);
            };
            // Octavia's next link may name its public URL: only the query is taken, so that
            // the token never goes anywhere but the catalog's endpoint.
            let next = reqwest::Url::parse(next).map_err(|error| {
                CloudError::Unavailable(format!("Octavia's next page: {error}"))
            })?;
            url.set_query(next.query());
        }
        Err(CloudError::Refused(format!(
            "Octavia lists more than {} load balancers",
            PAGE_SIZE * MAX_PAGES
        )))
    }

    /// Deletes a load balancer with everything on it; one already going (409) or gone (404)
    /// is fine.
    pub async fn delete_load_balancer(
        &self,
        session: &Session,
        endpoint: &str,
        id: &str,
    ) -> Result<(), CloudError> {
        let response = self
            .http
            .delete(format!(
                "{endpoint}/v2/lbaas/loadbalancers/{id}?cascade=true"
            ))
            .header("X-Auth-Token", &session.token)
            .send()
            .await
            .map_err(|error| CloudError::Unavailable(format!("Octavia: {error}")))?;
        let status = response.status();
        if status.is_success() || status == 404 || status == 409 {
            return Ok(());
        }
        let body = read_json(response, "Octavia").await.unwrap_or_default();
        Err(classify(status, "Octavia", &body))
    }
}

/// Reads a JSON body of at most [`MAX_RESPONSE_BYTES`].
async fn read_json(mut response: reqwest::Response, service: &str) -> Result<Value, CloudError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|error| CloudError::Unavailable(format!("{service}: {error}")))?
    {
        if bytes.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(CloudError::Refused(format!(
                "{service} answered more than {MAX_RESPONSE_BYTES} bytes"
            )));
        }
        bytes.extend_from_slice(&chunk);
    }
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&bytes)
        .map_err(|error| CloudError::Unavailable(format!("{service} answered no JSON: {error}")))
}

/// An error status as a tenant reads it, sorted by whether a retry may help.
fn classify(status: reqwest::StatusCode, service: &str, body: &Value) -> CloudError {
    let detail = body["error"]["message"]
        .as_str()
        .or_else(|| body["faultstring"].as_str())
        .unwrap_or_default();
    let message = format!("{service} answered {status}: {detail}");
    if status.is_server_error() || status == 429 || status == 408 {
        CloudError::Unavailable(message)
    } else {
        CloudError::Refused(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_credential_is_read_back_from_the_rendered_clouds_yaml() {
        let settings = crate::settings::Settings::for_cloud("https://keystone.test/v3");
        let credential = ApplicationCredential {
            id: "abc".to_owned(),
            secret: "s\"ecr:et\nline".to_owned(),
        };
        let text = crate::render::clouds_yaml(&settings, &credential);
        assert_eq!(credential_of_clouds_yaml(&text), Some(credential));
        assert_eq!(credential_of_clouds_yaml("clouds: {}"), None);
    }

    #[test]
    fn endpoints_are_picked_by_type_interface_and_region() {
        let mut settings = crate::settings::Settings::for_cloud("https://keystone.test/v3").cloud;
        settings.region_name = Some("two".to_owned());
        let cloud = Cloud::new(&settings).unwrap();
        let session = Session {
            token: String::new(),
            project_id: "p".to_owned(),
            catalog: json!([
                {"type": "compute", "endpoints": [{"interface": "public", "region_id": "two", "url": "http://nova"}]},
                {"type": "load-balancer", "endpoints": [
                    {"interface": "internal", "region_id": "two", "url": "http://internal"},
                    {"interface": "public", "region_id": "one", "url": "http://one"},
                    {"interface": "public", "region_id": "two", "url": "http://two/"}]}
            ]),
        };
        assert_eq!(
            cloud.endpoint(&session, "load-balancer").as_deref(),
            Some("http://two")
        );
        assert_eq!(cloud.endpoint(&session, "network"), None);
    }

    #[test]
    fn prefixes_of_two_clusters_never_overlap() {
        let a = load_balancer_prefix("kube-0123456789abcdef");
        let b = load_balancer_prefix("kube-0123456789abcde0");
        assert!(!a.starts_with(&b) && !b.starts_with(&a));
        assert!("kube_service_kube-0123456789abcdef_default_web".starts_with(&a));
    }
}
