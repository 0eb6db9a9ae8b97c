//! An Octavia (load-balancer API v2) stand-in on loopback HTTP, for the capi driver's cleanup
//! of the load balancers a cluster's cloud provider made: list (optionally by name) and
//! delete (cascade), as Octavia answers them. Tokens are real: each request's `X-Auth-Token`
//! is validated against the test Keystone, a project sees and deletes only its own load
//! balancers (another's is a 404, as in Octavia) while a token with the admin role sees and
//! deletes every project's (narrowed by `project_id`), lists come in pages (`limit`, `marker`,
//! a `next` link), and a missing or bad token is a 401.
//! A deleted load balancer stays `PENDING_DELETE` for a while before it goes, and deleting
//! one with listeners needs `cascade=true` — the two behaviours a cleanup has to get right.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// One load balancer as the stand-in holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadBalancer {
    pub id: String,
    pub name: String,
    pub project_id: String,
    pub provisioning_status: String,
    /// Listeners or pools hang off it: a delete without `cascade=true` is refused.
    pub has_children: bool,
}

/// A delete the stand-in accepted: what, for which project, when.
#[derive(Debug, Clone)]
pub struct Deletion {
    pub id: String,
    pub name: String,
    pub project_id: String,
    pub at: Instant,
}

#[derive(Default)]
struct State {
    load_balancers: Vec<LoadBalancer>,
    deleting_since: HashMap<String, Instant>,
    deletions: Vec<Deletion>,
    /// Token → (project, has the admin role), as Keystone validated it (None: refused).
    tokens: HashMap<String, Option<(String, bool)>>,
    /// Octavia's `pagination_max_limit`.
    page_size: usize,
}

struct Shared {
    state: Mutex<State>,
    http: reqwest::Client,
    auth_url: String,
    admin_token: String,
    delete_delay: Duration,
}

pub struct OctaviaStandIn {
    address: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for OctaviaStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A token of `user` scoped to `project`, both in the Default domain (password auth).
pub async fn password_token(
    http: &reqwest::Client,
    auth_url: &str,
    user: &str,
    password: &str,
    project: &str,
) -> Result<String, String> {
    let body = json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"id": "default"}, "password": password}}},
        "scope": {"project": {"name": project, "domain": {"id": "default"}}}}});
    let response = http
        .post(format!("{}/auth/tokens", auth_url.trim_end_matches('/')))
        .json(&body)
        .send()
        .await
        .map_err(|error| error.to_string())?;
    if !response.status().is_success() {
        return Err(format!("Keystone answered {}", response.status()));
    }
    response
        .headers()
        .get("X-Subject-Token")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| "no X-Subject-Token".to_owned())
}

impl OctaviaStandIn {
    /// Starts on a free loopback port; validates tokens with Keystone at `auth_url` as the
    /// given admin. Deleted load balancers go after `delete_delay`.
    pub async fn start(
        auth_url: &str,
        admin: (&str, &str, &str),
        delete_delay: Duration,
    ) -> Result<Self, String> {
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
            state: Mutex::new(State {
                page_size: 1000,
                ..State::default()
            }),
            http,
            auth_url: auth_url.trim_end_matches('/').to_owned(),
            admin_token,
            delete_delay,
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

    /// The endpoint URL to register in Keystone's catalog (Octavia's has no version).
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Adds a load balancer (ACTIVE, with listeners) of `project_id`; returns its id.
    pub fn add(&self, name: &str, project_id: &str) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        self.lock().load_balancers.push(LoadBalancer {
            id: id.clone(),
            name: name.to_owned(),
            project_id: project_id.to_owned(),
            provisioning_status: "ACTIVE".to_owned(),
            has_children: true,
        });
        id
    }

    /// Every load balancer still there (pending deletes included).
    pub fn load_balancers(&self) -> Vec<LoadBalancer> {
        let mut state = self.lock();
        expire(&mut state, self.shared.delete_delay);
        state.load_balancers.clone()
    }

    /// Lists come in pages of at most `size` (Octavia's `pagination_max_limit`).
    pub fn set_page_size(&self, size: usize) {
        self.lock().page_size = size.max(1);
    }

    /// Every delete accepted so far.
    pub fn deletions(&self) -> Vec<Deletion> {
        self.lock().deletions.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Load balancers whose delete delay has passed are gone.
fn expire(state: &mut State, delay: Duration) {
    let gone: Vec<String> = state
        .deleting_since
        .iter()
        .filter(|(_, since)| since.elapsed() >= delay)
        .map(|(id, _)| id.clone())
        .collect();
    for id in gone {
        state.deleting_since.remove(&id);
        state.load_balancers.retain(|lb| lb.id != id);
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

/// Octavia's error body.
fn fault(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    respond(
        status,
        json!({"faultcode": if status.is_server_error() { "Server" } else { "Client" },
               "faultstring": message, "debuginfo": null}),
    )
}

fn view(lb: &LoadBalancer) -> Value {
    json!({"id": lb.id, "name": lb.name, "project_id": lb.project_id, "tenant_id": lb.project_id,
           "provisioning_status": lb.provisioning_status, "operating_status": "ONLINE",
           "admin_state_up": true, "vip_address": "10.0.0.100", "provider": "amphora"})
}

/// The project of a token and whether it has the admin role, as Keystone says (cached); None
/// when Keystone refuses it.
async fn project_of(shared: &Shared, token: &str) -> Result<Option<(String, bool)>, String> {
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
    let project = if response.status().is_success() {
        let body: Value = response.json().await.map_err(|error| error.to_string())?;
        let admin = body["token"]["roles"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|role| role["name"] == "admin");
        body["token"]["project"]["id"]
            .as_str()
            .map(|project| (project.to_owned(), admin))
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
        .insert(token.to_owned(), project.clone());
    Ok(project)
}

fn query_value(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        (name == key).then(|| value.replace('+', " "))
    })
}

async fn handle(shared: &Shared, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let token = request
        .headers()
        .get("X-Auth-Token")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let Some(token) = token else {
        return fault(StatusCode::UNAUTHORIZED, "Authentication required");
    };
    let (project, admin) = match project_of(shared, &token).await {
        Ok(Some(known)) => known,
        Ok(None) => return fault(StatusCode::UNAUTHORIZED, "Authentication required"),
        Err(error) => return fault(StatusCode::SERVICE_UNAVAILABLE, &error),
    };
    let path = request.uri().path().trim_end_matches('/').to_owned();
    let query = request.uri().query().unwrap_or_default().to_owned();
    let mut state = shared.state.lock().unwrap();
    expire(&mut state, shared.delete_delay);
    match (request.method(), path.as_str()) {
        (&Method::GET, "/v2/lbaas/loadbalancers" | "/v2.0/lbaas/loadbalancers") => {
            let name = query_value(&query, "name");
            let wanted_project = query_value(&query, "project_id");
            let limit = query_value(&query, "limit")
                .and_then(|limit| limit.parse::<usize>().ok())
                .unwrap_or(state.page_size)
                .min(state.page_size)
                .max(1);
            let marker = query_value(&query, "marker");
            let matching: Vec<&LoadBalancer> = state
                .load_balancers
                .iter()
                .filter(|lb| admin || lb.project_id == project)
                .filter(|lb| wanted_project.as_ref().is_none_or(|p| lb.project_id == *p))
                .filter(|lb| name.as_ref().is_none_or(|name| lb.name == *name))
                .collect();
            let start = match &marker {
                Some(marker) => match matching.iter().position(|lb| lb.id == *marker) {
                    Some(index) => index + 1,
                    None => {
                        return fault(
                            StatusCode::NOT_FOUND,
                            &format!("Load Balancer {marker} could not be found."),
                        )
                    }
                },
                None => 0,
            };
            let page: Vec<Value> = matching
                .iter()
                .skip(start)
                .take(limit)
                .map(|lb| view(lb))
                .collect();
            let mut links = Vec::new();
            if start + limit < matching.len() {
                let last = &matching[start + limit - 1].id;
                // Octavia's links name its public URL with the query it was given.
                let mut next = format!(
                    "http://octavia.public.test:9876/v2/lbaas/loadbalancers?limit={limit}&marker={last}"
                );
                if let Some(project) = &wanted_project {
                    next.push_str(&format!("&project_id={project}"));
                }
                links.push(json!({"rel": "next", "href": next}));
            }
            respond(
                StatusCode::OK,
                json!({"loadbalancers": page, "loadbalancers_links": links}),
            )
        }
        (&Method::DELETE, path) if path.starts_with("/v2/lbaas/loadbalancers/") => {
            let id = path
                .trim_start_matches("/v2/lbaas/loadbalancers/")
                .to_owned();
            let cascade = query_value(&query, "cascade").as_deref() == Some("true");
            let Some(lb) = state
                .load_balancers
                .iter_mut()
                .find(|lb| lb.id == id && (admin || lb.project_id == project))
            else {
                return fault(
                    StatusCode::NOT_FOUND,
                    &format!("Load Balancer {id} could not be found."),
                );
            };
            if lb.provisioning_status != "ACTIVE" && lb.provisioning_status != "ERROR" {
                return fault(
                    StatusCode::CONFLICT,
                    &format!(
                        "Invalid state {} of loadbalancer resource {id}",
                        lb.provisioning_status
                    ),
                );
            }
            if lb.has_children && !cascade {
                return fault(
                    StatusCode::BAD_REQUEST,
                    &format!("Cannot delete Load Balancer {id} - it has children"),
                );
            }
            lb.provisioning_status = "PENDING_DELETE".to_owned();
            let deletion = Deletion {
                id: id.clone(),
                name: lb.name.clone(),
                project_id: project,
                at: Instant::now(),
            };
            state.deleting_since.insert(id, Instant::now());
            state.deletions.push(deletion);
            Response::builder()
                .status(StatusCode::NO_CONTENT)
                .body(Full::new(Bytes::new()))
                .unwrap_or_default()
        }
        _ => fault(StatusCode::NOT_FOUND, "The resource could not be found."),
    }
}
