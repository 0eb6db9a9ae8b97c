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
use crate::scripted::ScriptedCloud;

/// A Glance image: public when `project_id` is `None`.
#[derive(Debug, Clone)]
pub struct Image {
    pub id: String,
    pub name: String,
    pub os_distro: Option<String>,
    pub project_id: Option<String>,
}

/// A Neutron network (external ones are seen by every project) or subnet (then `network_id`
/// names its network, when the test gave one, and `cidr` its range).
#[derive(Debug, Clone)]
pub struct Network {
    pub id: String,
    pub name: String,
    pub project_id: String,
    pub external: bool,
    pub network_id: Option<String>,
    pub cidr: String,
}

/// A request the stand-in answered: method, path and query, the project of its token, and
/// the status it was answered with (500: a path no service has).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: String,
    pub project_id: String,
    pub status: u16,
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
    availability_zones: Vec<String>,
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
            network_id: None,
            cidr: String::new(),
        });
        id
    }

    /// Adds a subnet of `project_id`; its id.
    pub fn add_subnet(&self, name: &str, project_id: &str) -> String {
        self.add_subnet_in(None, name, project_id, "10.0.0.0/24")
    }

    /// Adds a subnet of `project_id` with range `cidr` to the network `network_id`; its id.
    pub fn add_subnet_in(
        &self,
        network_id: Option<&str>,
        name: &str,
        project_id: &str,
        cidr: &str,
    ) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        self.lock().subnets.push(Network {
            id: id.clone(),
            name: name.to_owned(),
            project_id: project_id.to_owned(),
            external: false,
            network_id: network_id.map(str::to_owned),
            cidr: cidr.to_owned(),
        });
        id
    }

    /// Gives `user_id` a keypair named `name`.
    pub fn add_keypair(&self, user_id: &str, name: &str) {
        self.lock()
            .keypairs
            .push((user_id.to_owned(), name.to_owned()));
    }

    /// Adds an availability zone to Nova's.
    pub fn add_availability_zone(&self, name: &str) {
        self.lock().availability_zones.push(name.to_owned());
    }

    /// What the dashboards' forms offer a user of `project_id`: a Kubernetes-capable image
    /// (`os_distro` fedora-coreos) and one without `os_distro` (which they must not offer),
    /// two flavors, the external network `public` (of `external_owner`), the project's network
    /// `private` with a subnet, the user's keypair `<name>-key`, the zone `nova`.
    pub fn seed_for_dashboards(&self, user: (&str, &str), project_id: &str, external_owner: &str) {
        self.add_image("fedora-coreos-40", Some("fedora-coreos"), None);
        self.add_image("cirros-0.6", None, None);
        self.add_flavor("m1.small", 20);
        self.add_flavor("m1.medium", 40);
        self.add_network("public", external_owner, true);
        let private = self.add_network("private", project_id, false);
        self.add_subnet_in(Some(&private), "private-subnet", project_id, "10.0.0.0/24");
        self.add_keypair(user.0, &format!("{}-key", user.1));
        self.add_availability_zone("nova");
    }

    /// The stand-in's references as the scripted driver is to accept them (images with an
    /// `os_distro`, flavors, networks, subnets, keypairs), so that what a dashboard picks
    /// from these services is what magnumd's driver knows.
    pub fn scripted_cloud(&self) -> ScriptedCloud {
        let state = self.lock();
        let pairs = |items: &mut dyn Iterator<Item = &Network>| {
            items
                .map(|item| (item.id.clone(), item.name.clone()))
                .collect()
        };
        ScriptedCloud {
            images: state
                .images
                .iter()
                .filter(|image| image.os_distro.is_some())
                .map(|image| magnum_driver::Image {
                    id: image.id.clone(),
                    name: image.name.clone(),
                    os_distro: image.os_distro.clone(),
                })
                .collect(),
            flavors: state
                .flavors
                .iter()
                .map(|(id, name, _)| (id.clone(), name.clone()))
                .collect(),
            external_networks: pairs(&mut state.networks.iter().filter(|n| n.external)),
            fixed_networks: pairs(&mut state.networks.iter().filter(|n| !n.external)),
            fixed_subnets: pairs(&mut state.subnets.iter()),
            keypairs: state
                .keypairs
                .iter()
                .map(|(_, name)| name.clone())
                .collect(),
        }
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

/// A fixed time for every record's `created_at`/`updated_at`: the stand-in has no clock.
const CREATED_AT: &str = "2026-01-01T00:00:00Z";

/// An image as Glance v2 shows it: its base properties, and `os_distro` among the extra
/// properties (top-level keys, strings).
fn image_view(image: &Image) -> Value {
    let mut view = json!({"id": image.id, "name": image.name, "status": "active",
        "visibility": if image.project_id.is_some() { "private" } else { "public" },
        "owner": image.project_id, "protected": false, "os_hidden": false,
        "container_format": "bare", "disk_format": "qcow2", "size": 1_073_741_824_u64,
        "virtual_size": null, "min_disk": 0, "min_ram": 0, "checksum": null,
        "os_hash_algo": null, "os_hash_value": null, "tags": [],
        "created_at": CREATED_AT, "updated_at": CREATED_AT,
        "self": format!("/v2/images/{}", image.id),
        "file": format!("/v2/images/{}/file", image.id),
        "schema": "/v2/schemas/image"});
    if let Some(distro) = &image.os_distro {
        view["os_distro"] = json!(distro);
    }
    view
}

/// Glance's `/v2/schemas/image`, the base properties (what python-glanceclient validates
/// every image it lists against); extra properties are strings.
fn image_schema() -> Value {
    let nullable_string =
        |description: &str| json!({"type": ["null", "string"], "description": description});
    json!({
        "name": "image",
        "properties": {
            "id": {"type": "string", "description": "An identifier for the image",
                   "pattern": "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$"},
            "name": {"type": ["null", "string"], "maxLength": 255,
                     "description": "Descriptive name for the image"},
            "status": {"type": "string", "readOnly": true, "description": "Status of the image",
                       "enum": ["queued", "saving", "active", "killed", "deleted", "uploading",
                                "importing", "pending_delete", "deactivated"]},
            "visibility": {"type": "string", "description": "Scope of image accessibility",
                           "enum": ["community", "public", "private", "shared"]},
            "protected": {"type": "boolean", "description": "If true, image will not be deletable."},
            "os_hidden": {"type": "boolean", "description": "If true, image will not appear in default image list response."},
            "checksum": {"type": ["null", "string"], "readOnly": true, "maxLength": 32,
                         "description": "md5 hash of image contents."},
            "os_hash_algo": nullable_string("Algorithm to calculate the os_hash_value"),
            "os_hash_value": nullable_string("Hexdigest of the image contents using the algorithm specified by the os_hash_algo"),
            "owner": {"type": ["null", "string"], "maxLength": 255,
                      "description": "Owner of the image"},
            "size": {"type": ["null", "integer"], "readOnly": true,
                     "description": "Size of image file in bytes"},
            "virtual_size": {"type": ["null", "integer"], "readOnly": true,
                             "description": "Virtual size of image in bytes"},
            "container_format": {"type": ["null", "string"], "description": "Format of the container",
                                 "enum": [null, "ami", "ari", "aki", "bare", "ovf", "ova", "docker", "compressed"]},
            "disk_format": {"type": ["null", "string"], "description": "Format of the disk",
                            "enum": [null, "ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso", "ploop"]},
            "created_at": {"type": "string", "readOnly": true,
                           "description": "Date and time of image registration"},
            "updated_at": {"type": "string", "readOnly": true,
                           "description": "Date and time of the last image modification"},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 255},
                     "description": "List of strings related to the image"},
            "min_ram": {"type": "integer", "description": "Amount of ram (in MB) required to boot image."},
            "min_disk": {"type": "integer", "description": "Amount of disk space (in GB) required to boot image."},
            "self": {"type": "string", "readOnly": true, "description": "An image self url"},
            "file": {"type": "string", "readOnly": true, "description": "An image file url"},
            "schema": {"type": "string", "readOnly": true, "description": "An image schema url"},
            "os_distro": {"type": "string", "description": "Common name of operating system distribution"},
        },
        "additionalProperties": {"type": "string"},
        "links": [{"rel": "self", "href": "{self}"}, {"rel": "enclosure", "href": "{file}"},
                  {"rel": "describedby", "href": "{schema}"}],
    })
}

fn network_view(network: &Network, subnets: &[Network]) -> Value {
    let subnet_ids: Vec<&str> = subnets
        .iter()
        .filter(|subnet| subnet.network_id.as_deref() == Some(network.id.as_str()))
        .map(|subnet| subnet.id.as_str())
        .collect();
    json!({"id": network.id, "name": network.name, "project_id": network.project_id,
           "tenant_id": network.project_id, "router:external": network.external,
           "shared": false, "admin_state_up": true, "status": "ACTIVE", "subnets": subnet_ids,
           "mtu": 1500, "availability_zones": ["nova"], "availability_zone_hints": [],
           "description": "", "tags": [], "created_at": CREATED_AT, "updated_at": CREATED_AT,
           "revision_number": 1})
}

fn subnet_view(subnet: &Network) -> Value {
    let gateway = subnet
        .cidr
        .split_once('/')
        .and_then(|(network, _)| network.rsplit_once('.'))
        .map(|(prefix, _)| format!("{prefix}.1"));
    json!({"id": subnet.id, "name": subnet.name, "project_id": subnet.project_id,
           "tenant_id": subnet.project_id, "network_id": subnet.network_id,
           "cidr": subnet.cidr, "ip_version": 4, "gateway_ip": gateway, "enable_dhcp": true,
           "allocation_pools": [], "dns_nameservers": [], "host_routes": [],
           "ipv6_ra_mode": null, "ipv6_address_mode": null, "subnetpool_id": null,
           "description": "", "tags": [], "created_at": CREATED_AT, "updated_at": CREATED_AT,
           "revision_number": 0})
}

fn flavor_view(id: &str, name: &str, disk: u64) -> Value {
    json!({"id": id, "name": name, "ram": 4096, "vcpus": 2, "disk": disk, "swap": 0,
           "OS-FLV-EXT-DATA:ephemeral": 0, "OS-FLV-DISABLED:disabled": false,
           "os-flavor-access:is_public": true, "rxtx_factor": 1.0, "description": null,
           "extra_specs": {}, "links": []})
}

/// The Neutron API extensions the stand-in's answers carry (what clients such as Horizon ask
/// for before they use an attribute).
const NEUTRON_EXTENSIONS: [(&str, &str); 4] = [
    ("external-net", "Neutron external network"),
    ("network_availability_zone", "Network Availability Zone"),
    ("project-id", "project_id field enabled"),
    ("standard-attr-description", "standard-attr-description"),
];

/// The Nova microversions the stand-in speaks (its answers do not change with them).
const NOVA_MAX_VERSION: &str = "2.96";

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
    let host = request
        .headers()
        .get(hyper::header::HOST)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_owned();
    let mut state = shared.state.lock().unwrap();
    let caller = Caller {
        project: &project,
        user: &user,
        admin,
    };
    let response = if request.method() == Method::GET {
        answer(&state, &caller, &host, &path, &raw_query)
    } else {
        respond(StatusCode::METHOD_NOT_ALLOWED, json!({}))
    };
    state.seen.push(Seen {
        method: request.method().to_string(),
        path,
        query: raw_query,
        project_id: project.clone(),
        status: response.status().as_u16(),
    });
    response
}

/// Whose token a request carries.
struct Caller<'a> {
    project: &'a str,
    user: &'a str,
    admin: bool,
}

/// The answer to a GET of `path?raw_query` by `caller`.
fn answer(
    state: &State,
    caller: &Caller<'_>,
    host: &str,
    path: &str,
    raw_query: &str,
) -> Response<Full<Bytes>> {
    let (project, user, admin) = (caller.project, caller.user, caller.admin);
    let query = query_pairs(raw_query);
    let filter = |key: &str| {
        query
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.clone())
    };
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
            json!({"version": {"id": "v2.1", "status": "CURRENT", "version": NOVA_MAX_VERSION,
                               "min_version": "2.1", "updated": "2013-07-23T11:33:21Z",
                               "links": [{"rel": "self",
                                          "href": format!("http://{host}/compute/v2.1/")}],
                               "media-types": [{"base": "application/json",
                               "type": "application/vnd.openstack.compute+json;version=2.1"}]}}),
        );
    }
    if path == "/image/v2/schemas/image" {
        return respond(StatusCode::OK, image_schema());
    }
    if path == "/image/v2/images" {
        // Glance's filters on base properties; one page holds every image (no `next`).
        let wanted = |key: &str, value: Option<&str>| {
            filter(key).is_none_or(|wanted| value == Some(wanted.as_str()))
        };
        let images: Vec<Value> = state
            .images
            .iter()
            .filter(visible_image)
            .filter(|image| wanted("name", Some(&image.name)))
            .filter(|_| wanted("status", Some("active")))
            .filter(|image| {
                let visibility = if image.project_id.is_some() {
                    "private"
                } else {
                    "public"
                };
                filter("visibility").is_none_or(|wanted| wanted == "all" || wanted == visibility)
            })
            .filter(|image| wanted("owner", image.project_id.as_deref()))
            .filter(|image| wanted("os_distro", image.os_distro.as_deref()))
            .map(image_view)
            .collect();
        return respond(
            StatusCode::OK,
            json!({"images": images, "first": "/v2/images", "schema": "/v2/schemas/images"}),
        );
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
    if path == "/compute/v2.1/flavors/detail" || path == "/compute/v2.1/flavors" {
        let flavors: Vec<Value> = state
            .flavors
            .iter()
            .map(|(id, name, disk)| flavor_view(id, name, *disk))
            .collect();
        return respond(StatusCode::OK, json!({ "flavors": flavors }));
    }
    if let Some(rest) = path.strip_prefix("/compute/v2.1/flavors/") {
        let (id, extra_specs) = match rest.strip_suffix("/os-extra_specs") {
            Some(id) => (decoded(id), true),
            None => (decoded(rest), false),
        };
        return match state.flavors.iter().find(|(known, _, _)| *known == id) {
            Some(_) if extra_specs => respond(StatusCode::OK, json!({"extra_specs": {}})),
            Some((id, name, disk)) => respond(
                StatusCode::OK,
                json!({"flavor": flavor_view(id, name, *disk)}),
            ),
            None => not_found(&format!("Flavor {id}")),
        };
    }
    if path == "/compute/v2.1/os-keypairs" {
        let keypairs: Vec<Value> = state
            .keypairs
            .iter()
            .filter(|(owner, _)| *owner == user)
            .map(|(_, name)| json!({"keypair": keypair_view(name, user)}))
            .collect();
        return respond(StatusCode::OK, json!({ "keypairs": keypairs }));
    }
    if let Some(name) = path.strip_prefix("/compute/v2.1/os-keypairs/") {
        let name = decoded(name);
        return if state
            .keypairs
            .iter()
            .any(|(owner, known)| *owner == user && *known == name)
        {
            let mut keypair = keypair_view(&name, user);
            keypair["user_id"] = json!(user);
            respond(StatusCode::OK, json!({ "keypair": keypair }))
        } else {
            not_found(&format!("Keypair {name}"))
        };
    }
    if path == "/compute/v2.1/os-availability-zone" {
        let zones: Vec<Value> = state
            .availability_zones
            .iter()
            .map(|zone| json!({"zoneName": zone, "zoneState": {"available": true}, "hosts": null}))
            .collect();
        return respond(StatusCode::OK, json!({"availabilityZoneInfo": zones}));
    }
    // The project overview's questions: the stand-in runs no servers.
    if path == "/compute/v2.1/limits" {
        return respond(
            StatusCode::OK,
            json!({"limits": {"rate": [], "absolute": {
                "maxTotalCores": 20, "maxTotalInstances": 10, "maxTotalRAMSize": 51200,
                "maxServerMeta": 128, "maxImageMeta": 128, "maxPersonality": 5,
                "maxPersonalitySize": 10240, "maxTotalKeypairs": 100, "maxServerGroups": 10,
                "maxServerGroupMembers": 10, "totalCoresUsed": 0, "totalInstancesUsed": 0,
                "totalRAMUsed": 0, "totalServerGroupsUsed": 0}}}),
        );
    }
    if let Some(tenant) = path.strip_prefix("/compute/v2.1/os-simple-tenant-usage/") {
        if tenant != project && !admin {
            return respond(
                StatusCode::FORBIDDEN,
                json!({"forbidden": {"code": 403, "message":
                    "Policy doesn't allow os_compute_api:os-simple-tenant-usage:show to be performed."}}),
            );
        }
        // Nova's answer for a project without servers in the period.
        return respond(StatusCode::OK, json!({"tenant_usage": {}}));
    }
    if path == "/network/v2.0/extensions" {
        let extensions: Vec<Value> = NEUTRON_EXTENSIONS
            .iter()
            .map(|(alias, name)| {
                json!({"alias": alias, "name": name, "description": name,
                       "updated": CREATED_AT, "links": []})
            })
            .collect();
        return respond(StatusCode::OK, json!({ "extensions": extensions }));
    }
    let subnets = path == "/network/v2.0/subnets";
    if path != "/network/v2.0/networks" && !subnets {
        // A path no service has: the client asked the wrong thing, not for a missing item.
        return respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"error": format!("no such path {path}")}),
        );
    }
    // Neutron's filters: any attribute, several values of one meaning any of them;
    // booleans as `true`/`false` in any case.
    let values = |key: &str| -> Vec<String> {
        query
            .iter()
            .filter(|(name, _)| name == key)
            .map(|(_, value)| value.to_ascii_lowercase())
            .collect()
    };
    let matches = |key: &str, value: &str| {
        let wanted = values(key);
        wanted.is_empty()
            || wanted
                .iter()
                .any(|wanted| *wanted == value.to_ascii_lowercase())
    };
    let items = if subnets {
        &state.subnets
    } else {
        &state.networks
    };
    let found: Vec<Value> = items
        .iter()
        .filter(visible_network)
        .filter(|item| matches("id", &item.id) && matches("name", &item.name))
        .filter(|item| matches("router:external", &item.external.to_string()))
        .filter(|_| matches("shared", "false"))
        .filter(|item| matches("tenant_id", &item.project_id))
        .filter(|item| matches("project_id", &item.project_id))
        .filter(|item| matches("network_id", item.network_id.as_deref().unwrap_or_default()))
        .map(|item| {
            if subnets {
                subnet_view(item)
            } else {
                network_view(item, &state.subnets)
            }
        })
        .collect();
    let collection = if subnets { "subnets" } else { "networks" };
    respond(StatusCode::OK, json!({ collection: found }))
}

fn keypair_view(name: &str, user: &str) -> Value {
    use std::hash::{Hash, Hasher};
    // A fingerprint made of the owner and name: the stand-in holds no keys.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (user, name).hash(&mut hasher);
    let digest = hasher.finish().to_be_bytes();
    let fingerprint: Vec<String> = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    json!({"name": name, "type": "ssh", "fingerprint": fingerprint.join(":"),
           "public_key": format!("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{} {name}", fingerprint.concat())})
}
