//! Glance, Nova and Neutron stand-ins on one loopback HTTP server, for the capi driver's
//! reference checks in the cloud: images (`/image/v2/images`, by id or `?name=`, with their
//! `os_distro`), flavors (`/compute/v2.1/flavors/{id}` and `/flavors/detail`), keypairs
//! (`/compute/v2.1/os-keypairs/{name}`, per user), networks and subnets
//! (`/network/v2.0/networks` and `/subnets`, filtered by `id`, `name` and `router:external`).
//! Tokens are real: each request's `X-Auth-Token` is validated against the test Keystone, and
//! what a token sees follows the services' own rules — a private image or network only in its
//! project, a keypair only for its user — so that a test can tell whose token was used. Every
//! request is recorded with the token's project.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::octavia::password_token;

/// A Glance image: public when `project_id` is `None`.
#[derive(Debug, Clone)]
pub struct Image {
    pub id: String,
    pub name: String,
    pub os_distro: Option<String>,
    pub project_id: Option<String>,
}

/// A Neutron network (external ones are seen by every project) or subnet.
#[derive(Debug, Clone)]
pub struct Network {
    pub id: String,
    pub name: String,
    pub project_id: String,
    pub external: bool,
}

/// A request the stand-in answered: method, path and query, and the project of its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: String,
    pub project_id: String,
}

#[derive(Default)]
struct State {
    images: Vec<Image>,
    /// id, name, root disk GiB.
    flavors: Vec<(String, String, u64)>,
    networks: Vec<Network>,
    subnets: Vec<Network>,
    /// (user id, keypair name).
    keypairs: Vec<(String, String)>,
    /// Token → (project, user, has the admin role), as Keystone validated it (None: refused).
    tokens: HashMap<String, Option<(String, String, bool)>>,
    seen: Vec<Seen>,
}

struct Shared {
    state: Mutex<State>,
    http: reqwest::Client,
    auth_url: String,
    admin_token: String,
}

pub struct CloudStandIn {
    address: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CloudStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CloudStandIn {
    /// Starts on a free loopback port; validates tokens with Keystone at `auth_url` as the
    /// given admin (user, password, project).
    pub async fn start(auth_url: &str, admin: (&str, &str, &str)) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|error| error.to_string())?;
        let admin_token = password_token(&http, auth_url, admin.0, admin.1, admin.2).await?;
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|error| error.to_string())?;
        let address = listener.local_addr().map_err(|error| error.to_string())?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            http,
            auth_url: auth_url.trim_end_matches('/').to_owned(),
            admin_token,
        });
        let serving = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let shared = serving.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(handle(&shared, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self {
            address,
            shared,
            task,
        })
    }

    /// The endpoints to register in Keystone's catalog, by service type.
    pub fn endpoints(&self) -> [(&'static str, String); 3] {
        let base = format!("http://{}", self.address);
        [
            ("image", format!("{base}/image")),
            ("compute", format!("{base}/compute/v2.1")),
            ("network", format!("{base}/network")),
        ]
    }

    /// Adds an image (public when `project_id` is `None`); returns its id.
    pub fn add_image(
        &self,
        name: &str,
        os_distro: Option<&str>,
        project_id: Option<&str>,
    ) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        self.lock().images.push(Image {
            id: id.clone(),
            name: name.to_owned(),
            os_distro: os_distro.map(str::to_owned),
            project_id: project_id.map(str::to_owned),
        });
        id
    }

    /// Adds a public flavor with a root disk of `disk_gib`; returns its id.
    pub fn add_flavor(&self, name: &str, disk_gib: u64) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        self.lock()
            .flavors
            .push((id.clone(), name.to_owned(), disk_gib));
        id
    }

    /// Adds a network of `project_id` (seen by every project when `external`); its id.
    pub fn add_network(&self, name: &str, project_id: &str, external: bool) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        self.lock().networks.push(Network {
            id: id.clone(),
            name: name.to_owned(),
            project_id: project_id.to_owned(),
            external,
        });
        id
    }

    /// Adds a subnet of `project_id`; its id.
    pub fn add_subnet(&self, name: &str, project_id: &str) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        self.lock().subnets.push(Network {
            id: id.clone(),
            name: name.to_owned(),
            project_id: project_id.to_owned(),
            external: false,
        });
        id
    }

    /// Gives `user_id` a keypair named `name`.
    pub fn add_keypair(&self, user_id: &str, name: &str) {
        self.lock()
            .keypairs
            .push((user_id.to_owned(), name.to_owned()));
    }

    /// Every request answered so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.lock().seen.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn respond(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn not_found(what: &str) -> Response<Full<Bytes>> {
    respond(
        StatusCode::NOT_FOUND,
        json!({"itemNotFound": {"code": 404, "message": format!("{what} could not be found.")}}),
    )
}

/// The project and user of a token, as Keystone says (cached); None when it refuses it.
async fn owner_of(shared: &Shared, token: &str) -> Result<Option<(String, String, bool)>, String> {
    if let Some(known) = shared.state.lock().unwrap().tokens.get(token) {
        return Ok(known.clone());
    }
    let response = shared
        .http
        .get(format!("{}/auth/tokens", shared.auth_url))
        .header("X-Auth-Token", &shared.admin_token)
        .header("X-Subject-Token", token)
        .send()
        .await
        .map_err(|error| error.to_string())?;
    let owner = if response.status().is_success() {
        let body: Value = response.json().await.map_err(|error| error.to_string())?;
        let admin = body["token"]["roles"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|role| role["name"] == "admin");
        match (
            body["token"]["project"]["id"].as_str(),
            body["token"]["user"]["id"].as_str(),
        ) {
            (Some(project), Some(user)) => Some((project.to_owned(), user.to_owned(), admin)),
            _ => None,
        }
    } else if response.status() == StatusCode::NOT_FOUND
        || response.status() == StatusCode::UNAUTHORIZED
    {
        None
    } else {
        return Err(format!("Keystone answered {}", response.status()));
    };
    shared
        .state
        .lock()
        .unwrap()
        .tokens
        .insert(token.to_owned(), owner.clone());
    Ok(owner)
}

/// The query's pairs, decoded as the services decode them.
fn query_pairs(query: &str) -> Vec<(String, String)> {
    reqwest::Url::parse(&format!("http://query/?{query}"))
        .map(|url| url.query_pairs().into_owned().collect())
        .unwrap_or_default()
}

/// A path segment, decoded.
fn decoded(segment: &str) -> String {
    reqwest::Url::parse(&format!("http://segment/?v={segment}"))
        .ok()
        .and_then(|url| {
            url.query_pairs()
                .next()
                .map(|(_, value)| value.into_owned())
        })
        .unwrap_or_else(|| segment.to_owned())
}

fn image_view(image: &Image) -> Value {
    let mut view = json!({"id": image.id, "name": image.name, "status": "active",
        "visibility": if image.project_id.is_some() { "private" } else { "public" },
        "owner": image.project_id});
    if let Some(distro) = &image.os_distro {
        view["os_distro"] = json!(distro);
    }
    view
}

fn network_view(network: &Network) -> Value {
    json!({"id": network.id, "name": network.name, "project_id": network.project_id,
           "tenant_id": network.project_id, "router:external": network.external,
           "status": "ACTIVE"})
}

async fn handle(shared: &Shared, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let token = request
        .headers()
        .get("X-Auth-Token")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let Some(token) = token else {
        return respond(
            StatusCode::UNAUTHORIZED,
            json!({"error": "Authentication required"}),
        );
    };
    let (project, user, admin) = match owner_of(shared, &token).await {
        Ok(Some(owner)) => owner,
        Ok(None) => {
            return respond(
                StatusCode::UNAUTHORIZED,
                json!({"error": "Authentication required"}),
            )
        }
        Err(error) => return respond(StatusCode::SERVICE_UNAVAILABLE, json!({"error": error})),
    };
    let path = request.uri().path().trim_end_matches('/').to_owned();
    let raw_query = request.uri().query().unwrap_or_default().to_owned();
    let query = query_pairs(&raw_query);
    let filter = |key: &str| {
        query
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.clone())
    };
    let mut state = shared.state.lock().unwrap();
    state.seen.push(Seen {
        method: request.method().to_string(),
        path: path.clone(),
        query: raw_query,
        project_id: project.clone(),
    });
    if request.method() != Method::GET {
        return respond(StatusCode::METHOD_NOT_ALLOWED, json!({}));
    }
    // As the services do, an admin's token sees every project's.
    let visible_image = |image: &&Image| {
        admin
            || image
                .project_id
                .as_ref()
                .is_none_or(|owner| *owner == project)
    };
    let visible_network =
        |network: &&Network| admin || network.external || network.project_id == project;
    // Nova answers its version document at its root: a lookup that climbed there must not
    // read it as a keypair or a flavor.
    if path == "/compute/v2.1" {
        return respond(
            StatusCode::OK,
            json!({"version": {"id": "v2.1", "status": "CURRENT"}}),
        );
    }
    if path == "/image/v2/images" {
        let name = filter("name");
        let images: Vec<Value> = state
            .images
            .iter()
            .filter(visible_image)
            .filter(|image| name.as_ref().is_none_or(|name| image.name == *name))
            .map(image_view)
            .collect();
        return respond(StatusCode::OK, json!({"images": images}));
    }
    if let Some(id) = path.strip_prefix("/image/v2/images/") {
        let id = decoded(id);
        return match state
            .images
            .iter()
            .filter(visible_image)
            .find(|image| image.id == id)
        {
            Some(image) => respond(StatusCode::OK, image_view(image)),
            None => not_found(&format!("Image {id}")),
        };
    }
    if path == "/compute/v2.1/flavors/detail" {
        let flavors: Vec<Value> = state
            .flavors
            .iter()
            .map(|(id, name, disk)| json!({"id": id, "name": name, "disk": disk, "vcpus": 2, "ram": 4096}))
            .collect();
        return respond(StatusCode::OK, json!({"flavors": flavors}));
    }
    if let Some(id) = path.strip_prefix("/compute/v2.1/flavors/") {
        let id = decoded(id);
        return match state.flavors.iter().find(|(known, _, _)| *known == id) {
            Some((id, name, disk)) => respond(
                StatusCode::OK,
                json!({"flavor": {"id": id, "name": name, "disk": disk, "vcpus": 2, "ram": 4096}}),
            ),
            None => not_found(&format!("Flavor {id}")),
        };
    }
    if let Some(name) = path.strip_prefix("/compute/v2.1/os-keypairs/") {
        let name = decoded(name);
        return if state
            .keypairs
            .iter()
            .any(|(owner, known)| *owner == user && *known == name)
        {
            respond(
                StatusCode::OK,
                json!({"keypair": {"name": name, "user_id": user}}),
            )
        } else {
            not_found(&format!("Keypair {name}"))
        };
    }
    let (collection, items) = match path.as_str() {
        "/network/v2.0/networks" => ("networks", &state.networks),
        "/network/v2.0/subnets" => ("subnets", &state.subnets),
        // A path no service has: the driver asked the wrong thing, not for a missing item.
        _ => {
            return respond(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": format!("no such path {path}")}),
            )
        }
    };
    let (id, name, external) = (filter("id"), filter("name"), filter("router:external"));
    let found: Vec<Value> = items
        .iter()
        .filter(visible_network)
        .filter(|item| id.as_ref().is_none_or(|id| item.id == *id))
        .filter(|item| name.as_ref().is_none_or(|name| item.name == *name))
        .filter(|item| {
            external
                .as_deref()
                .is_none_or(|wanted| (wanted == "true") == item.external)
        })
        .map(network_view)
        .collect();
    respond(StatusCode::OK, json!({ collection: found }))
}
