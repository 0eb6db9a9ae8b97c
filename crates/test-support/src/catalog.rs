//! A region of the test Keystone's catalog of a test's own: services registered in it are
//! seen by clients that pick that region (Horizon's region switch, `region_name`), never by
//! other tests, whose regions are their own. [`CatalogRegion::remove`] takes the endpoints,
//! services and the region away again; a region a killed test left is taken away by the next
//! [`CatalogRegion::create`] of the same prefix once it is [`STALE_AFTER`] old.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::octavia::password_token;

/// How old a region of a prefix must be before another test of that prefix removes it: longer
/// than any test keeps one.
pub const STALE_AFTER: Duration = Duration::from_secs(3600);

/// The region description that says when a test made it.
const DESCRIPTION_PREFIX: &str = "magnum-rs test region, made at unix time ";

pub struct CatalogRegion {
    http: reqwest::Client,
    auth_url: String,
    token: String,
    pub region: String,
    services: Vec<String>,
    endpoints: Vec<String>,
}

impl CatalogRegion {
    /// Creates the region `<prefix>-<random>` as Keystone's admin (user, password, project).
    pub async fn create(
        auth_url: &str,
        admin: (&str, &str, &str),
        prefix: &str,
    ) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|error| error.to_string())?;
        let auth_url = auth_url.trim_end_matches('/').to_owned();
        let token = password_token(&http, &auth_url, admin.0, admin.1, admin.2).await?;
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let region = format!("{prefix}-{suffix}");
        let made = Self {
            http,
            auth_url,
            token,
            region,
            services: Vec::new(),
            endpoints: Vec::new(),
        };
        made.remove_stale(prefix).await?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        made.call(
            reqwest::Method::POST,
            "/regions",
            Some(json!({"region": {"id": made.region,
                                   "description": format!("{DESCRIPTION_PREFIX}{now}")}})),
        )
        .await?;
        Ok(made)
    }

    /// Removes the regions of `prefix` that tests made more than [`STALE_AFTER`] ago, with
    /// their endpoints and the services made for them.
    async fn remove_stale(&self, prefix: &str) -> Result<(), String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let regions = self.call(reqwest::Method::GET, "/regions", None).await?;
        for region in regions["regions"].as_array().into_iter().flatten() {
            let id = region["id"].as_str().unwrap_or_default();
            let made_at = region["description"]
                .as_str()
                .and_then(|text| text.strip_prefix(DESCRIPTION_PREFIX))
                .and_then(|secs| secs.parse::<u64>().ok());
            let stale = made_at.is_some_and(|at| now.saturating_sub(at) > STALE_AFTER.as_secs());
            if !id.starts_with(&format!("{prefix}-")) || !stale {
                continue;
            }
            let endpoints = self
                .call(
                    reqwest::Method::GET,
                    &format!("/endpoints?region_id={id}"),
                    None,
                )
                .await?;
            let endpoints: Vec<String> = endpoints["endpoints"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|endpoint| endpoint["id"].as_str().map(str::to_owned))
                .collect();
            let services = self.call(reqwest::Method::GET, "/services", None).await?;
            let services: Vec<String> = services["services"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|service| {
                    service["name"]
                        .as_str()
                        .is_some_and(|name| name.ends_with(&format!("-{id}")))
                })
                .filter_map(|service| service["id"].as_str().map(str::to_owned))
                .collect();
            self.remove_all(id, &endpoints, &services).await?;
        }
        Ok(())
    }

    /// Registers `url` as the public endpoint of `service_type` in the region: on every
    /// service of that type the catalog already has (clients such as Horizon take the first
    /// service of a type and look for their region's endpoint in it alone, as one service with
    /// an endpoint per region is how a cloud is laid out), else on a new service.
    pub async fn register(&mut self, service_type: &str, url: &str) -> Result<(), String> {
        let listed = self
            .call(
                reqwest::Method::GET,
                &format!("/services?type={service_type}"),
                None,
            )
            .await?;
        let mut services: Vec<String> = listed["services"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|service| service["id"].as_str().map(str::to_owned))
            .collect();
        if services.is_empty() {
            let name = format!("{service_type}-{}", self.region);
            let service = self
                .call(
                    reqwest::Method::POST,
                    "/services",
                    Some(json!({"service": {"type": service_type, "name": name}})),
                )
                .await?;
            let service_id = service["service"]["id"]
                .as_str()
                .ok_or("no service id")?
                .to_owned();
            self.services.push(service_id.clone());
            services.push(service_id);
        }
        for service_id in services {
            let endpoint = self
                .call(
                    reqwest::Method::POST,
                    "/endpoints",
                    Some(
                        json!({"endpoint": {"service_id": service_id, "interface": "public",
                                             "url": url, "region_id": self.region}}),
                    ),
                )
                .await?;
            self.endpoints.push(
                endpoint["endpoint"]["id"]
                    .as_str()
                    .ok_or("no endpoint id")?
                    .to_owned(),
            );
        }
        Ok(())
    }

    /// Removes what [`CatalogRegion::register`] made (its endpoints, the services it
    /// created), then the region.
    pub async fn remove(self) -> Result<(), String> {
        self.remove_all(&self.region, &self.endpoints, &self.services)
            .await
    }

    async fn remove_all(
        &self,
        region: &str,
        endpoints: &[String],
        services: &[String],
    ) -> Result<(), String> {
        for endpoint in endpoints {
            self.call(
                reqwest::Method::DELETE,
                &format!("/endpoints/{endpoint}"),
                None,
            )
            .await?;
        }
        for service in services {
            self.call(
                reqwest::Method::DELETE,
                &format!("/services/{service}"),
                None,
            )
            .await?;
        }
        self.call(reqwest::Method::DELETE, &format!("/regions/{region}"), None)
            .await?;
        Ok(())
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.auth_url))
            .header("X-Auth-Token", &self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|error| error.to_string())?;
        let status = response.status();
        let text = response.text().await.map_err(|error| error.to_string())?;
        // Something already gone (another test's sweep took it) is removed.
        if method == reqwest::Method::DELETE && status == reqwest::StatusCode::NOT_FOUND {
            return Ok(Value::Null);
        }
        if !status.is_success() {
            return Err(format!("Keystone: {method} {path}: {status} {text}"));
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}
