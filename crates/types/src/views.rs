use serde::Serialize;
use serde_json::{Map, Value};

/// One entry of a `links` array.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Link {
    pub href: String,
    pub rel: String,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
}

impl Link {
    pub fn new(href: String, rel: &str) -> Self {
        Self {
            href,
            rel: rel.to_owned(),
            media_type: None,
        }
    }

    /// The `self` + `bookmark` pair every resource carries: `<base>/v1/<path>` and `<base>/<path>`.
    pub fn self_and_bookmark(base_url: &str, path: &str) -> Vec<Link> {
        vec![
            Link::new(format!("{base_url}/v1/{path}"), "self"),
            Link::new(format!("{base_url}/{path}"), "bookmark"),
        ]
    }
}

/// `GET /`.
#[derive(Debug, Serialize)]
pub struct RootDocument {
    pub name: &'static str,
    pub description: &'static str,
    pub versions: Vec<VersionEntry>,
}

#[derive(Debug, Serialize)]
pub struct VersionEntry {
    pub id: &'static str,
    pub links: Vec<Link>,
    pub status: &'static str,
    pub max_version: String,
    pub min_version: String,
}

/// `GET /v1`; the keys are in upstream's order.
#[derive(Debug, Serialize)]
pub struct V1Document {
    pub id: &'static str,
    pub media_types: Vec<MediaType>,
    pub links: Vec<Link>,
    pub clustertemplates: Vec<Link>,
    pub clusters: Vec<Link>,
    pub quotas: Vec<Link>,
    pub certificates: Vec<Link>,
    pub mservices: Vec<Link>,
    pub stats: Vec<Link>,
    pub federations: Vec<Link>,
    pub nodegroups: Vec<Link>,
    pub credentials: Vec<Link>,
}

#[derive(Debug, Serialize)]
pub struct MediaType {
    pub base: &'static str,
    #[serde(rename = "type")]
    pub media_type: &'static str,
}

/// A ClusterTemplate as every endpoint returns it (list items are full objects too): 36 keys,
/// always present, in upstream's order.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterTemplateView {
    pub uuid: String,
    pub name: Option<String>,
    pub coe: String,
    pub image_id: String,
    pub flavor_id: Option<String>,
    pub master_flavor_id: Option<String>,
    pub dns_nameserver: Option<String>,
    pub keypair_id: Option<String>,
    pub external_network_id: Option<String>,
    pub fixed_network: Option<String>,
    pub fixed_subnet: Option<String>,
    pub network_driver: Option<String>,
    pub apiserver_port: Option<i64>,
    pub docker_volume_size: Option<i64>,
    pub cluster_distro: Option<String>,
    pub links: Vec<Link>,
    pub http_proxy: Option<String>,
    pub https_proxy: Option<String>,
    pub no_proxy: Option<String>,
    pub volume_driver: Option<String>,
    pub registry_enabled: bool,
    pub labels: Map<String, Value>,
    pub tls_disabled: bool,
    pub public: bool,
    pub server_type: String,
    pub insecure_registry: Option<String>,
    pub docker_storage_driver: Option<String>,
    pub master_lb_enabled: bool,
    pub floating_ip_enabled: bool,
    pub project_id: String,
    pub user_id: String,
    pub hidden: bool,
    pub tags: Option<String>,
    pub driver: Option<String>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

/// `GET /v1/clustertemplates[/detail]`.
#[derive(Debug, Serialize)]
pub struct ClusterTemplateCollection {
    pub clustertemplates: Vec<ClusterTemplateView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// One conductor as `GET /v1/mservices` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct MagnumServiceView {
    pub host: String,
    pub binary: String,
    pub state: &'static str,
    pub id: i64,
    pub report_count: i64,
    pub disabled: bool,
    pub disabled_reason: Option<String>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct MagnumServiceCollection {
    pub mservices: Vec<MagnumServiceView>,
}

/// Magnum's error envelope: always exactly one element.
#[derive(Debug, Serialize)]
pub struct ErrorEnvelope {
    pub errors: [ErrorEntry; 1],
}

#[derive(Debug, Serialize)]
pub struct ErrorEntry {
    pub request_id: &'static str,
    pub code: &'static str,
    pub status: u16,
    pub title: String,
    pub detail: String,
    pub links: [(); 0],
}

impl ErrorEnvelope {
    pub fn new(code: &'static str, status: u16, title: String, detail: String) -> Self {
        Self {
            errors: [ErrorEntry {
                request_id: "",
                code,
                status,
                title,
                detail,
                links: [],
            }],
        }
    }
}

/// The special 406 body for a well-formed but unsupported microversion.
#[derive(Debug, Serialize)]
pub struct MicroversionErrorEnvelope {
    pub errors: [MicroversionError; 1],
}

#[derive(Debug, Serialize)]
pub struct MicroversionError {
    pub max_version: String,
    pub min_version: String,
    pub code: &'static str,
    pub links: Vec<HelpLink>,
    pub title: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct HelpLink {
    pub rel: &'static str,
    pub href: &'static str,
}
